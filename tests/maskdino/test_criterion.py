"""Loss keys and weights (spec 5.5), denoising bookkeeping, empty images, loss normalisation."""

from __future__ import annotations

import pytest
import torch
from maskdino_test_utils import (
    load_config,
    semantic_batch,
    synthetic_image,
    synthetic_instances,
    two_image_batch,
)

from detrex_ext.config import LazyConfig, instantiate
from detrex_ext.structures import ImageList
from detrex_projects.maskdino.modeling import maskdino_weight_dict

BASE = ["loss_ce", "loss_mask", "loss_dice", "loss_bbox", "loss_giou"]


def test_reference_weight_dict():
    weights = maskdino_weight_dict(two_stage=True, dn="seg", dec_layers=9)
    assert len(weights) == 200
    assert weights["loss_ce"] == 4.0 and weights["loss_giou_dn_8"] == 2.0
    assert weights["loss_mask_interm"] == 5.0 and weights["loss_bbox_interm_dn_3"] == 5.0
    # Built like the official from_config: _interm, then _dn of all, then _{i} of all.
    assert "loss_ce_interm_dn" in weights and "loss_dice_interm_dn_8" in weights
    for key, value in weights.items():
        base = "_".join(key.split("_")[:2])
        assert value == {"loss_ce": 4.0, "loss_giou": 2.0}.get(base, 5.0), key


def test_weight_dict_variants():
    assert len(maskdino_weight_dict(two_stage=False, dn="seg", dec_layers=9)) == 100
    standard = maskdino_weight_dict(two_stage=True, dn="standard", dec_layers=9)
    # "standard" DN drops only the exact keys loss_mask / loss_dice from the _dn copies.
    assert "loss_mask_dn" not in standard and "loss_mask_interm_dn" in standard
    assert len(maskdino_weight_dict(dn="no", deep_supervision=False)) == 10


def full_depth_model(name: str):
    """Reduced widths but the released 9 decoder layers, so the key set is the official one."""
    cfg = load_config(name, reduced=True)
    LazyConfig.apply_overrides(cfg, ["model.sem_seg_head.transformer_predictor.dec_layers=9"])
    return instantiate(cfg.model).train()


def expected_keys(aux_dn_from: int, interm: bool) -> set[str]:
    keys = set(BASE) | {k + "_dn" for k in BASE}
    keys |= {f"{k}_{i}" for k in BASE for i in range(9)}
    keys |= {f"{k}_dn_{i}" for k in BASE for i in range(aux_dn_from, 9)}
    if interm:
        keys |= {k + "_interm" for k in BASE}
    return keys


@pytest.fixture(scope="module")
def reference():
    return full_depth_model("maskdino_r50_coco_instance_seg_50ep")


def test_reference_loss_keys(reference):
    losses = reference(two_image_batch())
    assert set(losses) == expected_keys(0, interm=True)
    assert len(losses) == 105
    assert all(torch.isfinite(v) for v in losses.values())
    # Weighted: the model returns weight * loss.
    raw = reference.criterion.weight_dict
    assert raw["loss_ce"] == 4.0


def test_semantic_loss_keys():
    model = full_depth_model("maskdino_r50_ade20k_semantic_seg_160k")
    losses = model(semantic_batch(model.num_classes))
    # No query selection: no _interm losses and no DN loss on the pre-decoder prediction.
    assert set(losses) == expected_keys(1, interm=False)
    assert len(losses) == 95


def test_dn_outputs_layout(reference):
    """GT counts 3 and 2 -> 2 slots per group, 12 // 3 = 4 groups, 8 DN queries per image."""
    images = ImageList(torch.zeros(2, 3, 96, 96), [(64, 80), (72, 56)])
    targets = reference.prepare_targets(two_image_batch(), images)
    outputs, dn_meta = reference.sem_seg_head(reference.backbone(images.tensor), targets=targets)
    q = reference.num_queries
    assert dn_meta["scalar"] == 4 and dn_meta["single_pad"] == 3 and dn_meta["pad_size"] == 12
    dn_out = dn_meta["output_known_lbs_bboxes"]
    assert dn_out["pred_logits"].shape[:2] == (2, 12) and outputs["pred_logits"].shape[:2] == (2, q)
    assert len(dn_out["aux_outputs"]) == len(outputs["aux_outputs"]) == 9
    # Slot g * 3 + j of image 1 (2 objects) reconstructs object j; slot 2 of each group is padding.
    assert dn_meta["indices"][1][0].tolist() == [0, 1, 3, 4, 6, 7, 9, 10]
    assert dn_meta["indices"][1][1].tolist() == [0, 1] * 4


def test_too_many_objects_switch_dn_off(reference):
    h = w = 64
    boxes = [[x, y, x + 3, y + 3] for x in range(0, 60, 5) for y in range(0, 60, 6)][:13]
    batch = [
        {
            "image": synthetic_image(h, w, boxes),
            "instances": synthetic_instances(h, w, boxes, [i % 80 for i in range(13)]),
        }
    ]
    assert reference.sem_seg_head.predictor.dn_generator.num_dn_queries == 12  # 13 > 12: DN off
    losses = reference(batch)
    assert set(losses) == expected_keys(0, interm=True)
    assert all(v.item() == 0.0 for k, v in losses.items() if "_dn" in k)
    assert losses["loss_ce"].item() > 0


def test_images_without_objects(reference):
    batch = two_image_batch()
    empty = synthetic_instances(72, 56, [], [])
    batch[1]["instances"] = empty
    losses = reference(batch)
    assert set(losses) == expected_keys(0, interm=True)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    # A batch without any object: class losses only ("no object" everywhere), DN skipped.
    batch[0]["instances"] = synthetic_instances(64, 80, [], [])
    reference.zero_grad()
    losses = reference(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_ce"].item() > 0 and losses["loss_bbox"].item() == 0.0
    sum(losses.values()).backward()


def test_focal_class_loss_normalisation():
    """loss_ce = sum over queries x classes of the focal term / number of objects."""
    from detrex_projects.maskdino.modeling import SetCriterion

    criterion = SetCriterion(num_classes=3, matcher=None, weight_dict={})
    logits = torch.tensor([[[2.0, -1.0, 0.5], [-0.3, 0.2, 1.5]]])
    targets = [{"labels": torch.tensor([2])}]
    indices = [(torch.tensor([1]), torch.tensor([0]))]
    got = criterion.loss_labels({"pred_logits": logits}, targets, indices, num_boxes=2.0)
    onehot = torch.tensor([[[0.0, 0, 0], [0, 0, 1]]])
    p = logits.sigmoid()
    bce = -(onehot * p.log() + (1 - onehot) * (1 - p).log())
    p_t = p * onehot + (1 - p) * (1 - onehot)
    alpha_t = 0.25 * onehot + 0.75 * (1 - onehot)
    expected = (alpha_t * (1 - p_t) ** 2 * bce).sum() / 2.0
    assert got["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_matched_losses_index_the_right_image_and_target():
    """Two images (2 and 1 objects): the box, class and mask losses use prediction
    (b, query) with target (b, index), as the hand-gathered pairs give; panoptic_on keeps the
    thing classes only. Indices are the matcher's per-image pairs, in its (unsorted) order."""
    from detrex_ext.modeling import point_sampled_mask_losses
    from detrex_projects.maskdino.modeling import SetCriterion

    torch.manual_seed(0)
    boxes = torch.rand(2, 4, 4) * 0.5 + 0.25
    logits, masks = torch.randn(2, 4, 3), torch.randn(2, 4, 8, 8)
    targets = [
        {
            "labels": torch.tensor([0, 2]),
            "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.6, 0.1, 0.3]]),
            "masks": torch.rand(2, 16, 16) > 0.5,
        },
        {
            "labels": torch.tensor([1]),
            "boxes": torch.tensor([[0.4, 0.4, 0.3, 0.2]]),
            "masks": torch.rand(1, 16, 16) > 0.5,
        },
    ]
    indices = [(torch.tensor([3, 0]), torch.tensor([1, 0])), (torch.tensor([2]), torch.tensor([0]))]
    pairs = [(0, 3, 0, 1), (0, 0, 0, 0), (1, 2, 1, 0)]  # (image, query, image, target)
    src = torch.stack([boxes[b, q] for b, q, _, _ in pairs])
    tgt = torch.stack([targets[b]["boxes"][t] for _, _, b, t in pairs])
    outputs = {"pred_boxes": boxes, "pred_logits": logits, "pred_masks": masks}

    criterion = SetCriterion(num_classes=3, matcher=None, weight_dict={}, num_points=16)
    got = criterion.loss_boxes(outputs, targets, indices, num_boxes=3.0)
    assert got["loss_bbox"].item() == pytest.approx((src - tgt).abs().sum().item() / 3.0)
    # panoptic: class 2 is stuff with num_thing_classes=2, so the first pair drops out
    panoptic = SetCriterion(
        num_classes=3, matcher=None, weight_dict={}, panoptic_on=True, num_thing_classes=2
    )
    got = panoptic.loss_boxes(outputs, targets, indices, num_boxes=3.0)
    assert got["loss_bbox"].item() == pytest.approx((src - tgt)[1:].abs().sum().item() / 3.0)

    classes = criterion._target_classes(logits, targets, indices)
    expected = torch.full((2, 4), 3)
    expected[0, 3], expected[0, 0], expected[1, 2] = 2, 0, 1
    assert torch.equal(classes, expected)

    torch.manual_seed(1)
    got = criterion.loss_masks(outputs, targets, indices, num_boxes=3.0)
    torch.manual_seed(1)
    src_masks = torch.stack([masks[b, q] for b, q, _, _ in pairs])
    tgt_masks = torch.stack([targets[b]["masks"][t] for _, _, b, t in pairs])
    want = point_sampled_mask_losses(src_masks, tgt_masks, 3.0, num_points=16)
    assert torch.equal(got["loss_mask"], want["loss_mask"])
    assert torch.equal(got["loss_dice"], want["loss_dice"])


@pytest.mark.parametrize("panoptic_on", [False, True])
def test_box_losses_of_all_outputs_at_once_equal_each_alone(panoptic_on):
    """`_box_losses` (every output's box losses in one pass, as `forward` computes them) gives
    bit for bit the values and gradients of `loss_boxes` per output, including an output with
    no match and, with panoptic_on, the stuff targets left out."""
    from detrex_projects.maskdino.modeling import SetCriterion

    torch.manual_seed(0)
    targets = [
        {"labels": torch.tensor([0, 3, 1]), "boxes": torch.rand(3, 4) * 0.4 + 0.2},
        {"labels": torch.tensor([2]), "boxes": torch.rand(1, 4) * 0.4 + 0.2},
    ]
    criterion = SetCriterion(
        num_classes=4,
        matcher=None,
        weight_dict={},
        panoptic_on=panoptic_on,
        num_thing_classes=3,
        giou_eps=1e-6,
    )
    boxes = [(torch.rand(2, 5, 4) * 0.4 + 0.2).requires_grad_() for _ in range(3)]
    indices = [
        [
            (torch.tensor([4, 1, 0]), torch.tensor([2, 0, 1])),
            (torch.tensor([3]), torch.tensor([0])),
        ],
        [(torch.tensor([], dtype=torch.int64),) * 2, (torch.tensor([1]), torch.tensor([0]))],
        [(torch.tensor([], dtype=torch.int64),) * 2] * 2,
    ]
    jobs = [({"pred_boxes": b}, i, 2.5, f"_{k}") for k, (b, i) in enumerate(zip(boxes, indices))]
    together = criterion._box_losses(jobs, targets)
    sum(together.values()).backward()
    grads = [b.grad.clone() for b in boxes]
    for k, (b, i) in enumerate(zip(boxes, indices)):
        b.grad = None
        alone = criterion.loss_boxes({"pred_boxes": b}, targets, i, 2.5)
        sum(alone.values()).backward()
        for name, value in alone.items():
            assert torch.equal(together[f"{name}_{k}"], value), (name, k)
        assert torch.equal(b.grad, grads[k])
    assert together["loss_bbox_2"].item() == 0.0
