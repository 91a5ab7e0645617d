"""The fast inference post-processing gives exactly the straightforward computation's results.

The model resizes only the queries each output needs and merges panoptic segments with one
table look-up. The expectation here is an independent copy of the straightforward computation
(every query's mask resized to the padded size, cropped and resized to the output size; one
Python step per kept query writing its region into the map), compared on random predictions
built to exercise every panoptic rule: the score threshold, empty won / own areas, empty
regions, the overlap ratio and stuff segments merged by class; output sizes smaller than,
equal to and larger than the input size; no kept query; no thing class among the top-k.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from maskdino_test_utils import load_config
from torch.nn import functional as F

from detrex_ext.config import instantiate
from detrex_ext.modeling.postprocessing import sem_seg_postprocess
from detrex_ext.structures import ImageList
from detrex_projects.maskdino.modeling import inference

NUM_CLASSES = 133  # COCO panoptic: contiguous ids 0..79 are things, 80..132 stuff
THINGS = list(range(80))
STUFF_A, STUFF_B = 100, 120


# ----------------------------------------------------------------- reference computation
def reference_resize(masks, padded_size, image_size, out_size):
    """`[Q, h, w]` -> `[Q, *out_size]`: padded size, crop to the image, output size."""
    masks = F.interpolate(masks[None], size=padded_size, mode="bilinear", align_corners=False)
    masks = masks[:, :, : image_size[0], : image_size[1]]
    return F.interpolate(masks, size=out_size, mode="bilinear", align_corners=False)[0]


def reference_panoptic(mask_cls, mask_logits, thr, overlap, temp, reasons=None):
    """Official panoptic merge, one query at a time; `reasons` tallies each query's outcome."""
    probs = mask_cls.sigmoid()
    scores, labels = probs.max(-1)
    keep = scores > thr
    scores, labels = F.softmax(probs / temp, dim=-1).max(-1)
    if reasons is not None:
        reasons["below_threshold"] += int((~keep).sum())
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_logits[keep].sigmoid()
    seg = torch.zeros(mask_logits.shape[-2:], dtype=torch.int32)
    info = []
    if cur_masks.shape[0] == 0:
        return seg, info
    ids = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
    stuff, current = {}, 0
    for k in range(cur_classes.shape[0]):
        pred_class = int(cur_classes[k])
        won = ids == k
        region = won & (cur_masks[k] >= 0.5)
        won_area, own_area = int(won.sum()), int((cur_masks[k] >= 0.5).sum())
        outcome = None
        if won_area == 0:
            outcome = "no_won_area"
        elif own_area == 0:
            outcome = "no_own_area"
        elif int(region.sum()) == 0:
            outcome = "no_region"
        elif won_area / own_area < overlap:
            outcome = "overlap_ratio"
        elif pred_class not in THINGS and pred_class in stuff:
            seg[region] = stuff[pred_class]
            outcome = "stuff_merged"
        else:
            current += 1
            if pred_class not in THINGS:
                stuff[pred_class] = current
            seg[region] = current
            info.append({"id": current, "isthing": pred_class in THINGS, "category_id": pred_class})
            outcome = "segment"
        if reasons is not None:
            reasons[outcome] += 1
    return seg, info


def reference_outputs(model, outputs, batched_inputs, images):
    """Every switched-on output of every image, all queries resized first."""
    assert model.transform_eval and model.num_classes == NUM_CLASSES
    padded = tuple(images.tensor.shape[-2:])
    results = []
    for b, (x, size) in enumerate(zip(batched_inputs, images.image_sizes)):
        out_size = (x["height"], x["width"])
        cls = outputs["pred_logits"][b]
        masks = outputs["pred_masks"][b]
        result = {}
        if model.semantic_on and not model.sem_seg_postprocess_before_inference:
            full = F.interpolate(masks[None], size=padded, mode="bilinear", align_corners=False)
            probs = F.softmax(cls, dim=-1)[:, :-1]
            sem = torch.einsum("qc,qhw->chw", probs, full[0].sigmoid())
            sem = sem[None, :, : size[0], : size[1]]
            sem = F.interpolate(sem, size=out_size, mode="bilinear", align_corners=False)
            result["sem_seg"] = sem[0]
        else:
            full = reference_resize(masks, padded, size, out_size)
            if model.semantic_on:
                probs = F.softmax(cls.sigmoid() / model.pano_temp, dim=-1)
                result["sem_seg"] = torch.einsum("qc,qhw->chw", probs, full.sigmoid())
        if model.panoptic_on:
            result["panoptic_seg"] = reference_panoptic(
                cls, full, model.object_mask_threshold, model.overlap_threshold, model.pano_temp
            )
        if model.instance_on:
            scores, flat = cls.sigmoid().flatten().topk(model.test_topk_per_image, sorted=False)
            labels, queries = flat % NUM_CLASSES, flat // NUM_CLASSES
            if model.panoptic_on:
                thing = labels < len(THINGS)
                scores, labels, queries = scores[thing], labels[thing], queries[thing]
            inst_masks = full[queries]
            binary = (inst_masks > 0).float()
            mask_scores = (inst_masks.sigmoid() * binary).flatten(1).sum(1) / (
                binary.flatten(1).sum(1) + 1e-6
            )
            cx, cy, w, h = outputs["pred_boxes"][b][queries].unbind(-1)
            sh, sw = padded[0] / size[0] * out_size[0], padded[1] / size[1] * out_size[1]
            boxes = torch.stack(
                [(cx - w / 2) * sw, (cy - h / 2) * sh, (cx + w / 2) * sw, (cy + h / 2) * sh], -1
            )
            result["instances"] = (binary, scores * mask_scores, labels, boxes)
        results.append(result)
    return results


# ----------------------------------------------------------------- random predictions
def blob_logits(num, h, w, gen, radius=(2.0, 5.0)):
    """`[num, h, w]` mask logits: discs of random centre and radius plus noise."""
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    cy, cx = torch.rand(num, 1, 1, generator=gen) * h, torch.rand(num, 1, 1, generator=gen) * w
    r = radius[0] + torch.rand(num, 1, 1, generator=gen) * (radius[1] - radius[0])
    dist = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
    return 6 * (1 - dist / r) + torch.randn(num, h, w, generator=gen)


def disc(h, w, cy, cx, radius):
    """`[h, w]` logits of a disc: 8 at the centre, 0 on the circle, negative outside."""
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    return 8 * (1 - ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt() / radius)


def random_predictions(seed, num_queries=40, mask_size=(16, 24)):
    """Class logits `[Q, 133]`, mask logits `[Q, h, w]`, boxes `[Q, 4]` with designed queries.

    Random queries: a random top class with a logit in [-2.5, 3] (about a quarter under the 0.25
    threshold) and a noisy disc. Designed ones (the left 3/8 and the right 3/8 of the image):
    stuff queries of two classes on disjoint stripes; a copy of a stronger query's mask (wins
    nothing); a mask under 0.5 everywhere (no own area); a query whose own mask lies under a
    stronger query's but that wins background pixels (no region); a disc half covered by a
    stronger query (overlap ratio).
    """
    gen = torch.Generator().manual_seed(seed)
    h, w = mask_size
    cls = torch.randn(num_queries, NUM_CLASSES, generator=gen) - 8.0
    top = torch.randint(0, NUM_CLASSES, (num_queries,), generator=gen)
    cls[torch.arange(num_queries), top] = torch.rand(num_queries, generator=gen) * 5.5 - 2.5
    masks = blob_logits(num_queries, h, w, gen)
    # Random discs stay in the middle quarter of the width, away from the designed masks.
    masks[13:, :, : 3 * w // 8] = -10.0
    masks[13:, :, 5 * w // 8 :] = -10.0
    strong, weak = 3.0, 0.5  # both kept; after the sharpened softmax `strong` scores higher

    def design(q, label, logit, mask):
        cls[q] = -8.0
        cls[q, label] = logit
        masks[q] = mask

    stripe = max(1, w // 24)
    for q, label in enumerate([STUFF_A, STUFF_A, STUFF_A, STUFF_B, STUFF_B, STUFF_A]):
        design(q, label, strong, torch.full((h, w), -8.0))
        masks[q, :, q * stripe : (q + 1) * stripe] = 8.0
    r, near, far = h / 7, 11 * w / 16, 14 * w / 16
    design(7, 8, strong, disc(h, w, h / 4, near, r))
    design(6, 7, weak, masks[7])  # same mask as 7 with a lower score: wins no pixel
    low = torch.full((h, w), -10.0)
    low[h // 2 :, 5 * w // 8 :] = -0.2  # sigmoid 0.45: wins background, never >= 0.5
    design(8, 9, strong, low)
    design(10, 11, strong, disc(h, w, 3 * h / 4, near, r))
    # >= 0.5 only under 10's disc, where 10 wins; sigmoid 0.38 in the bottom left background.
    under = torch.where(masks[10] > 0, masks[10], -10.0)
    under[h // 2 :, : 3 * w // 8] = -0.5
    design(9, 10, weak, under)
    steep = disc(h, w, h / 2, far, r)
    design(11, 12, weak, torch.where(steep > 0, steep, -12.0))  # no background tails
    left_half = torch.where(torch.arange(w) < int(far), masks[11], -8.0)
    design(12, 13, strong, left_half)  # wins the left half of 11's disc
    boxes = torch.rand(num_queries, 4, generator=gen) * 0.5 + 0.25
    return cls, masks, boxes


@pytest.fixture(scope="module")
def model():
    cfg = load_config("maskdino_r50_coco_panoptic_seg_50ep", reduced=True)
    torch.manual_seed(0)  # the same weights whatever ran before in this process
    return instantiate(cfg.model).eval()


def configure(model, semantic, panoptic, instance, ce_loss=False):
    model.semantic_on, model.panoptic_on, model.instance_on = semantic, panoptic, instance
    model.sem_seg_postprocess_before_inference = not ce_loss
    model.semantic_ce_loss = ce_loss
    return model


def batch(seed, output_sizes, ce_loss=False, transform=None):
    """Two images padded to 128 x 160 (masks 32 x 40): 120 x 150 and the full canvas."""
    per_image = [random_predictions(seed + i, mask_size=(32, 40)) for i in range(2)]
    cls, masks, boxes = (torch.stack(t) for t in zip(*per_image))
    if ce_loss:
        cls = torch.cat([cls, torch.randn(2, cls.shape[1], 1)], -1)
    if transform is not None:
        cls = transform(cls)
    outputs = {"pred_logits": cls, "pred_masks": masks, "pred_boxes": boxes}
    images = ImageList(torch.zeros(2, 3, 128, 160), [(120, 150), (128, 160)])
    inputs = [{"height": h, "width": w} for h, w in output_sizes]
    return outputs, inputs, images


def assert_same(ours, expected):
    assert set(ours) == set(expected)
    if "sem_seg" in expected:
        assert torch.allclose(ours["sem_seg"], expected["sem_seg"], rtol=0, atol=1e-6)
    if "panoptic_seg" in expected:
        seg, info = ours["panoptic_seg"]
        assert seg.dtype == torch.int32 and torch.equal(seg, expected["panoptic_seg"][0])
        assert info == expected["panoptic_seg"][1]
    if "instances" in expected:
        inst = ours["instances"]
        binary, scores, labels, boxes = expected["instances"]
        assert torch.equal(inst.pred_masks, binary)
        assert torch.equal(inst.scores, scores) and torch.equal(inst.pred_classes, labels)
        assert torch.allclose(inst.pred_boxes.tensor, boxes, rtol=1e-6, atol=1e-4)


# Output smaller than the input, equal to it (no resize) and larger; "small" outputs resize all
# queries (see `inference.subset_resize_is_exact`).
SIZES = [[(110, 150), (128, 160)], [(120, 150), (180, 230)], [(40, 50), (60, 70)]]
FLAGS = {
    "panoptic": (False, True, False),
    "panoptic+instance": (False, True, True),
    "all": (True, True, True),
    "instance": (False, False, True),
    "semantic": (True, False, False),
}


# ----------------------------------------------------------------- tests
@pytest.mark.parametrize("flags", list(FLAGS))
@pytest.mark.parametrize("sizes", SIZES, ids=["smaller+same", "same-crop+larger", "small"])
def test_model_inference_equals_reference(model, flags, sizes):
    configure(model, *FLAGS[flags])
    outputs, inputs, images = batch(0, sizes)
    with torch.no_grad():
        ours = model.inference(outputs, inputs, images)
    for mine, expected in zip(ours, reference_outputs(model, outputs, inputs, images)):
        assert_same(mine, expected)


def test_semantic_ce_model_equals_reference(model):
    """ADE-style: semantic map at the padded size, then cropped and resized."""
    configure(model, True, False, False, ce_loss=True)
    outputs, inputs, images = batch(3, SIZES[0], ce_loss=True)
    with torch.no_grad():
        ours = model.inference(outputs, inputs, images)
    for mine, expected in zip(ours, reference_outputs(model, outputs, inputs, images)):
        assert_same(mine, expected)


@pytest.mark.parametrize("chunk_bytes", [1, 4 * 128 * 160 * 7])  # 1 query, 7 queries a chunk
def test_instance_masks_resized_in_chunks_equal_reference(model, monkeypatch, chunk_bytes):
    from detrex_projects.maskdino.modeling import meta_arch

    monkeypatch.setattr(meta_arch, "_MASK_CHUNK_BYTES", chunk_bytes)
    configure(model, *FLAGS["instance"])
    outputs, inputs, images = batch(0, SIZES[0])
    with torch.no_grad():
        ours = model.inference(outputs, inputs, images)
    for mine, expected in zip(ours, reference_outputs(model, outputs, inputs, images)):
        assert_same(mine, expected)


@pytest.mark.parametrize("flags", ["panoptic", "panoptic+instance", "all"])
def test_no_kept_query_and_no_thing_in_top_k(model, flags):
    """All scores under the threshold (an empty panoptic map) and only stuff classes scored."""

    def only_weak_stuff(cls):
        cls = cls.clone()
        cls[..., : len(THINGS)] = -30.0
        return cls.clamp(max=-1.2)  # sigmoid < 0.25

    configure(model, *FLAGS[flags])
    outputs, inputs, images = batch(5, SIZES[0], transform=only_weak_stuff)
    with torch.no_grad():
        ours = model.inference(outputs, inputs, images)
    for mine, expected in zip(ours, reference_outputs(model, outputs, inputs, images)):
        assert_same(mine, expected)
        assert mine["panoptic_seg"][1] == [] and not mine["panoptic_seg"][0].any()
        if "instances" in mine:
            assert len(mine["instances"]) == 0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("overlap", [0.8, 0.5])
def test_panoptic_merge_equals_per_query_reference(seed, overlap):
    cls, masks, _ = random_predictions(seed, num_queries=48, mask_size=(31, 45))
    reasons = Counter()
    expected = reference_panoptic(cls, masks, 0.25, overlap, 0.06, reasons)
    queries, scores, labels = inference.panoptic_keep(cls, 0.25, True, 0.06)
    seg, info = inference.panoptic_merge(scores, labels, masks[queries], THINGS, overlap)
    assert torch.equal(seg, expected[0]) and info == expected[1]
    # The inputs exercise every rule of the merge.
    rules = {"below_threshold", "no_won_area", "no_own_area", "no_region", "stuff_merged"}
    if overlap == 0.8:
        rules.add("overlap_ratio")
    assert rules <= {r for r, n in reasons.items() if n > 0}, reasons
    assert reasons["segment"] >= 5
    # The composed entry point gives the same.
    seg2, info2 = inference.panoptic_inference(cls, masks, THINGS, 0.25, overlap, True, 0.06)
    assert torch.equal(seg2, seg) and info2 == info


def test_panoptic_merge_ties_go_to_the_first_query():
    """Two queries with the same class logits and the same saturated mask (sigmoid exactly 1)
    tie on it. When the first one wins it is a segment; the second one also claims the last
    query's area, so had it won the tie it would fail the overlap rule (the area stays void)."""
    h, w = 20, 28
    cls = torch.full((4, NUM_CLASSES), -8.0)
    cls[0, 40] = cls[1, 5] = cls[2, 5] = cls[3, 70] = 3.0
    masks = torch.full((4, h, w), -30.0)
    masks[0, :, :8] = 30.0
    masks[1:3, :, 8:18] = 30.0
    masks[2, :, 18:] = 2.0  # own (sigmoid 0.88) but lost to query 3
    masks[3, :, 18:] = 30.0
    queries, scores, labels = inference.panoptic_keep(cls, 0.25, True, 0.06)
    assert scores[1] == scores[2] and queries.tolist() == [0, 1, 2, 3]
    seg, info = inference.panoptic_merge(scores, labels, masks[queries], THINGS, 0.8)
    expected = reference_panoptic(cls, masks, 0.25, 0.8, 0.06)
    assert torch.equal(seg, expected[0]) and info == expected[1]
    assert [s["category_id"] for s in info] == [40, 5, 70]
    assert seg[:, 8:18].eq(2).all()


@pytest.mark.parametrize("threads", [1, 2])
def test_resizing_a_subset_of_queries_gives_the_full_resize_values(model, threads):
    """Any subset size (3 once picked another CPU kernel) and output smaller, equal, larger."""
    gen = torch.Generator().manual_seed(1)
    masks = torch.randn(50, 40, 60, generator=gen) * 5
    padded, image = (160, 240), (150, 230)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for out in [(120, 170), (150, 230), (300, 410)]:
            assert inference.subset_resize_is_exact(padded, out)
            full = model._masks_at_output_size(masks, padded, image, *out)
            assert torch.equal(full, reference_resize(masks, padded, image, out))
            for k in [1, 2, 3, 5, 8, 13, 50]:
                subset = torch.randperm(50, generator=gen)[:k]
                part = inference.resize_mask_logits(masks[subset], padded, image, out)
                assert torch.equal(part, full[subset]), (out, k)
    finally:
        torch.set_num_threads(before)
    empty = inference.resize_mask_logits(masks[:0], padded, image, (45, 57))
    assert empty.shape == (0, 45, 57)
    assert not inference.subset_resize_is_exact(padded, (60, 60))


def test_sem_seg_postprocess_without_resize_is_the_crop():
    gen = torch.Generator().manual_seed(2)
    maps = torch.randn(7, 64, 80, generator=gen) * 10
    for crop in [(64, 80), (50, 61)]:
        ours = sem_seg_postprocess(maps, crop, *crop)
        resized = F.interpolate(
            maps[None, :, : crop[0], : crop[1]], size=crop, mode="bilinear", align_corners=False
        )[0]
        assert ours.is_contiguous() and torch.equal(ours, resized)


def test_panoptic_only_resizes_kept_queries_and_skips_other_outputs(model, monkeypatch):
    configure(model, *FLAGS["panoptic"])
    outputs, inputs, images = batch(0, SIZES[0])
    resized = []
    original = inference.resize_mask_logits

    def spy(masks, *args):
        resized.append(masks.shape[0])
        return original(masks, *args)

    def forbidden(*_args, **_kwargs):
        raise AssertionError("an output that is switched off, or every query, was computed")

    monkeypatch.setattr(inference, "resize_mask_logits", spy)
    monkeypatch.setattr(model, "_masks_at_output_size", forbidden)
    monkeypatch.setattr(inference, "semantic_inference", forbidden)
    monkeypatch.setattr(inference, "select_topk_queries", forbidden)
    with torch.no_grad():
        results = model.inference(outputs, inputs, images)
    kept = [
        int((outputs["pred_logits"][b].sigmoid().max(-1).values > 0.25).sum()) for b in range(2)
    ]
    assert resized == kept and max(kept) < outputs["pred_masks"].shape[1]
    assert all(set(r) == {"panoptic_seg"} for r in results)
