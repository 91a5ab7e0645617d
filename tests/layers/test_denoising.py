import pytest
import torch
from torch import nn

from detrex_ext.layers import (
    DenoisingQueryGenerator,
    denoising_attention_mask,
    inverse_sigmoid,
)

NUM_CLASSES = 7


def _targets(counts, seed=0):
    gen = torch.Generator().manual_seed(seed)
    targets = []
    for n in counts:
        centers = torch.rand(n, 2, generator=gen) * 0.4 + 0.3
        sizes = torch.rand(n, 2, generator=gen) * 0.2 + 0.05
        targets.append(
            {
                "labels": torch.randint(0, NUM_CLASSES, (n,), generator=gen),
                "boxes": torch.cat([centers, sizes], 1),
            }
        )
    return targets


def _rows(text):
    return torch.tensor([[c == "x" for c in row.split()] for row in text.strip().splitlines()])


def test_attention_mask_plain_groups_hand_built():
    # 2 groups of 2 DN slots, 3 matching queries; x = blocked
    expected = _rows("""
        . . x x . . .
        . . x x . . .
        x x . . . . .
        x x . . . . .
        x x x x . . .
        x x x x . . .
        x x x x . . .
        """)
    assert torch.equal(denoising_attention_mask(4, 2, 3), expected)
    generator = DenoisingQueryGenerator(NUM_CLASSES, num_dn_queries=5)
    dn = generator(_targets([1, 2]), num_queries=3, label_embedding=nn.Embedding(NUM_CLASSES, 4))
    assert (dn.num_groups, dn.group_size, dn.pad_size) == (2, 2, 4)
    assert torch.equal(dn.attn_mask, expected)


def test_attention_mask_contrastive_groups_hand_built():
    # counts [1, 2] -> group = 2 positive + 2 negative slots; budget 9 -> 2 groups; 2 matching
    expected = _rows("""
        . . . . x x x x . .
        . . . . x x x x . .
        . . . . x x x x . .
        . . . . x x x x . .
        x x x x . . . . . .
        x x x x . . . . . .
        x x x x . . . . . .
        x x x x . . . . . .
        x x x x x x x x . .
        x x x x x x x x . .
        """)
    generator = DenoisingQueryGenerator(
        NUM_CLASSES, num_dn_queries=9, contrastive=True, box_noise_mode="corners"
    )
    dn = generator(_targets([1, 2]), num_queries=2, label_embedding=nn.Embedding(NUM_CLASSES, 4))
    assert (dn.num_groups, dn.group_size, dn.pad_size) == (2, 4, 8)
    assert torch.equal(dn.attn_mask, expected)
    # slot layout: copy c of GT j at c * max_objects + j; odd copies are negatives
    assert dn.positive.tolist() == [
        [True, False, False, False, True, False, False, False],
        [True, True, False, False, True, True, False, False],
    ]
    assert [idx.tolist() for idx, _ in dn.indices] == [[0, 4], [0, 1, 4, 5]]
    assert [gt.tolist() for _, gt in dn.indices] == [[0, 0], [0, 1, 0, 1]]


def test_layout_without_noise_and_zero_padding():
    embedding = nn.Embedding(NUM_CLASSES, 6)
    targets = _targets([3, 0, 2])
    generator = DenoisingQueryGenerator(
        NUM_CLASSES, num_dn_queries=10, label_noise_prob=0.0, box_noise_scale=0.0
    )
    dn = generator(targets, num_queries=5, label_embedding=embedding)
    assert (dn.num_groups, dn.max_objects, dn.pad_size) == (3, 3, 9)
    assert dn.content.shape == (3, 9, 6) and dn.anchor_logits.shape == (3, 9, 4)
    assert dn.attn_mask.shape == (14, 14)
    filled = torch.zeros(3, 9, dtype=torch.bool)
    for b, (slots, gt) in enumerate(dn.indices):
        assert len(slots) == 3 * len(targets[b]["labels"])
        labels, boxes = targets[b]["labels"][gt], targets[b]["boxes"][gt]
        torch.testing.assert_close(dn.content[b, slots], embedding(labels))
        torch.testing.assert_close(dn.anchor_logits[b, slots], inverse_sigmoid(boxes))
        assert torch.equal(dn.noisy_labels[b, slots], labels)
        filled[b, slots] = True
    assert torch.equal(filled, dn.positive)
    # empty slots (image 1 entirely, slot 2 of image 2 in every group) are zero / -1
    assert (dn.content[~filled] == 0).all() and (dn.anchor_logits[~filled] == 0).all()
    assert (dn.noisy_labels[~filled] == -1).all()
    assert dn.indices[1][0].numel() == 0
    # gradients reach the label embedding
    dn.content.sum().backward()
    assert embedding.weight.grad.abs().sum() > 0
    queries = torch.randn(3, 14, 2)
    dn_part, matching = dn.split(queries)
    assert dn_part.shape == (3, 9, 2) and matching.shape == (3, 5, 2)


def test_center_size_box_noise_bounds_and_label_noise_rate():
    targets = _targets([40, 25], seed=1)
    generator = DenoisingQueryGenerator(
        NUM_CLASSES, num_dn_queries=400, label_noise_prob=0.5, box_noise_scale=0.4
    )
    dn = generator(targets, 5, nn.Embedding(NUM_CLASSES, 2), torch.Generator().manual_seed(0))
    changed, total = 0, 0
    for b, (slots, gt) in enumerate(dn.indices):
        clean = targets[b]["boxes"][gt]
        noisy = dn.noisy_boxes[b, slots]
        delta = (noisy - clean).abs()
        wh = clean[:, 2:]
        assert (delta[:, :2] <= 0.2 * wh + 1e-6).all()  # centre: U(-1,1) * w/2 * 0.4
        assert (delta[:, 2:] <= 0.4 * wh + 1e-6).all()  # size: U(-1,1) * w * 0.4
        assert (delta[:, 2:] > 0.2 * wh).any()  # the size noise really uses w, not w/2
        torch.testing.assert_close(dn.anchor_logits[b, slots], inverse_sigmoid(noisy))
        labels = dn.noisy_labels[b, slots]
        assert ((labels >= 0) & (labels < NUM_CLASSES)).all()
        changed += int((labels != targets[b]["labels"][gt]).sum())
        total += len(gt)
    # replaced with prob 0.5, and the random class differs from the original w.p. 6/7
    assert abs(changed / total - 0.5 * 6 / 7) < 0.05


def test_contrastive_corner_noise_magnitudes():
    targets = _targets([6], seed=2)
    generator = DenoisingQueryGenerator(
        NUM_CLASSES,
        num_dn_queries=60,
        label_noise_prob=0.0,
        box_noise_scale=0.5,
        box_noise_mode="corners",
        contrastive=True,
    )
    dn = generator(targets, 3, nn.Embedding(NUM_CLASSES, 2), torch.Generator().manual_seed(4))
    assert dn.num_groups == 5
    boxes = targets[0]["boxes"]

    def corners(b):
        return torch.cat([b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2], -1)

    for slot in range(dn.pad_size):
        gt = slot % dn.max_objects
        move = (corners(dn.noisy_boxes[0, slot]) - corners(boxes[gt])).abs()
        half = boxes[gt, 2:].repeat(2) / 2 * 0.5
        if dn.positive[0, slot]:
            assert (move < half + 1e-6).all()
        else:  # negatives move every corner by [1, 2) x the positive range (no clamping here)
            assert (move >= half - 1e-6).all() and (move < 2 * half + 1e-6).all()


def _official_style_reference(targets, num_classes, dn_num, noise_scale, num_queries):
    """Mask DINO's DN preparation re-derived from the spec (section 4.4), global RNG."""
    counts = [len(t["labels"]) for t in targets]
    scalar = dn_num // max(counts)
    labels = torch.cat([t["labels"] for t in targets]).repeat(scalar, 1).view(-1)
    boxes = torch.cat([t["boxes"] for t in targets]).repeat(scalar, 1)
    bid = torch.cat([torch.full((n,), i) for i, n in enumerate(counts)]).repeat(scalar, 1).view(-1)
    p = torch.rand_like(labels.float())
    chosen = torch.nonzero(p < noise_scale * 0.5).view(-1)
    labels = labels.scatter(0, chosen, torch.randint_like(chosen, 0, num_classes))
    diff = torch.cat([boxes[:, 2:] / 2, boxes[:, 2:]], 1)
    boxes = (boxes + torch.mul(torch.rand_like(boxes) * 2 - 1.0, diff) * noise_scale).clamp(0, 1)
    single_pad = max(counts)
    pad = single_pad * scalar
    slot = torch.cat([torch.arange(n) for n in counts])
    slot = torch.cat([slot + single_pad * i for i in range(scalar)])
    label_out = torch.full((len(targets), pad), -1, dtype=torch.long)
    label_out[bid, slot] = labels
    box_out = torch.zeros(len(targets), pad, 4)
    box_out[bid, slot] = inverse_sigmoid(boxes)
    mask = torch.zeros(pad + num_queries, pad + num_queries, dtype=torch.bool)
    mask[pad:, :pad] = True
    for i in range(scalar):
        mask[single_pad * i : single_pad * (i + 1), single_pad * (i + 1) : pad] = True
        mask[single_pad * i : single_pad * (i + 1), : single_pad * i] = True
    return label_out, box_out, mask


def test_reproduces_mask_dino_variant_exactly_under_global_seed():
    targets = _targets([3, 7], seed=5)
    embedding = nn.Embedding(NUM_CLASSES, 8)
    generator = DenoisingQueryGenerator(
        NUM_CLASSES, num_dn_queries=100, label_noise_prob=0.2, box_noise_scale=0.4
    )
    torch.manual_seed(123)
    ref_labels, ref_anchors, ref_mask = _official_style_reference(
        targets, NUM_CLASSES, 100, 0.4, 300
    )
    torch.manual_seed(123)
    dn = generator(targets, 300, embedding)
    assert (dn.num_groups, dn.pad_size, tuple(dn.attn_mask.shape)) == (14, 98, (398, 398))
    assert torch.equal(dn.noisy_labels, ref_labels)
    assert torch.equal(dn.anchor_logits, ref_anchors)
    assert torch.equal(dn.attn_mask, ref_mask)


def test_deterministic_under_generator():
    targets = _targets([4, 2])
    generator = DenoisingQueryGenerator(NUM_CLASSES, label_noise_prob=0.5, box_noise_scale=1.0)
    emb = nn.Embedding(NUM_CLASSES, 3)
    a = generator(targets, 10, emb, torch.Generator().manual_seed(7))
    torch.manual_seed(99)  # the global RNG must not matter
    b = generator(targets, 10, emb, torch.Generator().manual_seed(7))
    c = generator(targets, 10, emb, torch.Generator().manual_seed(8))
    assert torch.equal(a.noisy_labels, b.noisy_labels) and torch.equal(a.noisy_boxes, b.noisy_boxes)
    assert not torch.equal(a.noisy_boxes, c.noisy_boxes)


def test_skip_rules_and_validation():
    emb = nn.Embedding(NUM_CLASSES, 3)
    mask_dino = DenoisingQueryGenerator(NUM_CLASSES, num_dn_queries=100)
    assert mask_dino(_targets([0, 0]), 10, emb) is None  # no objects
    assert mask_dino(_targets([101, 3]), 10, emb) is None  # more objects than the budget
    dino = DenoisingQueryGenerator(
        NUM_CLASSES,
        num_dn_queries=100,
        contrastive=True,
        box_noise_mode="corners",
        min_num_groups=1,
    )
    dn = dino(_targets([101, 3]), 10, emb)
    assert (dn.num_groups, dn.pad_size) == (1, 202)
    fixed = DenoisingQueryGenerator(NUM_CLASSES, num_groups=3)
    assert fixed(_targets([50]), 10, emb).num_groups == 3
    with pytest.raises(ValueError, match="box_noise_mode"):
        DenoisingQueryGenerator(NUM_CLASSES, box_noise_mode="xyxy")
    with pytest.raises(ValueError, match="label_noise_prob"):
        DenoisingQueryGenerator(NUM_CLASSES, label_noise_prob=1.5)
