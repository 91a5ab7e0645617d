"""Inference: detectron2 output structure per task, output sizes, batching, bf16, and the
post-processing rules on designed predictions (spec section 6)."""

from __future__ import annotations

import pytest
import torch
from maskdino_test_utils import load_config, synthetic_image

from detrex_ext.config import LazyConfig, instantiate
from detrex_ext.structures import Boxes, ImageList, Instances
from detrex_projects.maskdino.modeling import inference


@pytest.fixture(scope="module")
def panoptic_model():
    cfg = load_config("maskdino_r50_coco_panoptic_seg_50ep", reduced=True)
    # Seeded: the bf16 error of the sharpened semantic map depends on the random weights (from
    # 0.005 to 0.22 over seeds 0-7), so an unseeded model made test_bf16_autocast order-dependent.
    torch.manual_seed(0)
    return instantiate(cfg.model).eval()


def images(*sizes):
    return [
        {
            "image": synthetic_image(h, w, [[2, 2, w // 2, h // 2]], seed=i),
            "height": oh,
            "width": ow,
        }
        for i, (h, w, oh, ow) in enumerate(sizes)
    ]


def test_output_structure_at_requested_size(panoptic_model):
    batch = images((64, 80, 96, 120), (40, 56, 40, 56))
    with torch.no_grad():
        outputs = panoptic_model(batch)
    c = panoptic_model.num_classes
    for out, (oh, ow) in zip(outputs, [(96, 120), (40, 56)]):
        assert set(out) == {"instances", "sem_seg", "panoptic_seg"}
        inst = out["instances"]
        assert isinstance(inst, Instances) and inst.image_size == (oh, ow)
        k = len(inst)
        assert 0 < k <= panoptic_model.test_topk_per_image
        assert isinstance(inst.pred_boxes, Boxes) and inst.pred_boxes.tensor.shape == (k, 4)
        assert inst.scores.shape == (k,) and inst.pred_classes.dtype == torch.int64
        # Panoptic models only report thing classes (COCO contiguous ids 0..79) as instances.
        assert int(inst.pred_classes.max()) < 80
        assert inst.pred_masks.shape == (k, oh, ow)
        assert set(inst.pred_masks.unique().tolist()) <= {0.0, 1.0}
        assert out["sem_seg"].shape == (c, oh, ow) and out["sem_seg"].dtype == torch.float32
        seg, info = out["panoptic_seg"]
        assert seg.shape == (oh, ow) and seg.dtype == torch.int32
        assert isinstance(info, list)
        assert {s["id"] for s in info} == set(seg.unique().tolist()) - {0}


def test_only_switched_on_outputs_are_computed():
    cfg = load_config("maskdino_r50_coco_instance_seg_50ep", reduced=True)
    model = instantiate(cfg.model).eval()
    with torch.no_grad():
        (out,) = model(images((64, 64, 64, 64)))
    assert set(out) == {"instances"}
    assert len(out["instances"]) == min(100, model.num_queries * model.num_classes)
    cfg = load_config("maskdino_r50_ade20k_semantic_seg_160k", reduced=True)
    model = instantiate(cfg.model).eval()
    with torch.no_grad():
        (out,) = model(images((64, 64, 70, 50)))
    assert set(out) == {"sem_seg"} and out["sem_seg"].shape == (150, 70, 50)


def test_batching_does_not_change_an_image_result(panoptic_model):
    """A smaller second image leaves the padded canvas unchanged, so image 0 is unaffected."""
    (alone,) = images((64, 80, 64, 80))
    with torch.no_grad():
        single = panoptic_model([alone])[0]
        pair = panoptic_model([alone, images((32, 40, 32, 40))[0]])[0]
    assert torch.allclose(single["sem_seg"], pair["sem_seg"], atol=1e-5)
    assert torch.allclose(single["instances"].scores, pair["instances"].scores, atol=1e-5)


def test_bf16_autocast(panoptic_model):
    """Under bf16 autocast the network runs in bf16 but post-processing runs in fp32.

    Whole-map closeness to the fp32 run is not a property of the code: with random weights the
    sharpened softmax (temperature 0.06) turns bf16 rounding in the logits into map errors that
    ranged 0.005-0.22 of the map's range over seeds and CPUs. What is tested instead:
    1. post-processing is exactly the fp32 computation on the raw outputs (no autocast inside);
    2. it amplifies the raw bf16 error no more than the analytic bound of the semantic formula
       sem[c] = sum_q softmax(sigmoid(cls_q) / T)[c] * sigmoid(mask_q):
       |d sem[c]| <= sum_q (|d p_q[c]| + p_q[c] * |d mask_q| / 4), with
       sum_c |d p_q[c]| <= min(2, max_c |d cls_q| / (4 T)) (softmax Jacobian, sigmoid slope <= 1/4).
    """
    batch = images((64, 80, 64, 80))
    raw = {}
    panoptic_model.sem_seg_head.register_forward_hook(lambda m, i, o: raw.update(o[0]))
    with torch.no_grad():
        fp32 = panoptic_model(batch)[0]
        raw32 = {k: raw[k].clone() for k in ("pred_logits", "pred_masks", "pred_boxes")}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = panoptic_model(batch)[0]
        raw16 = {k: raw[k].clone() for k in ("pred_logits", "pred_masks", "pred_boxes")}
        image_list = ImageList.from_tensors(
            [(x["image"] - panoptic_model.pixel_mean) / panoptic_model.pixel_std for x in batch],
            panoptic_model.size_divisibility,
        )
        replay = panoptic_model.inference(raw16, batch, image_list)[0]
    panoptic_model.sem_seg_head._forward_hooks.clear()

    assert bf16["sem_seg"].dtype == torch.float32
    assert bf16["instances"].scores.dtype == torch.float32
    assert raw16["pred_masks"].dtype == torch.bfloat16  # the network did run in bf16
    assert torch.isfinite(bf16["sem_seg"]).all()
    # 1. post-processing under autocast == plain fp32 post-processing of the same raw outputs
    assert torch.equal(bf16["sem_seg"], replay["sem_seg"])
    assert torch.equal(bf16["instances"].scores, replay["instances"].scores)
    assert torch.equal(bf16["panoptic_seg"][0], replay["panoptic_seg"][0])

    # 2. the semantic map's error is within the bound implied by the raw errors
    temperature = panoptic_model.pano_temp
    cls32, cls16 = raw32["pred_logits"][0].float(), raw16["pred_logits"][0].float()
    d_cls = (cls16 - cls32).abs().amax(-1)  # [Q]
    probs = torch.maximum(  # p_q[c] on either side of the difference: [Q, C]
        torch.softmax(cls32.sigmoid() / temperature, -1),
        torch.softmax(cls16.sigmoid() / temperature, -1),
    )
    mask32 = panoptic_model._masks_at_output_size(
        raw32["pred_masks"][0].float(), image_list.tensor.shape[-2:], (64, 80), 64, 80
    )
    mask16 = panoptic_model._masks_at_output_size(
        raw16["pred_masks"][0].float(), image_list.tensor.shape[-2:], (64, 80), 64, 80
    )
    d_mask = (mask16 - mask32).abs()  # [Q, H, W]
    bound = (d_cls / (4 * temperature)).clamp(max=2.0).sum() + torch.einsum(
        "qc,qhw->chw", probs, d_mask / 4
    )
    error = (bf16["sem_seg"] - fp32["sem_seg"]).abs()
    assert (error <= bound + 1e-5).all()


def test_training_under_bf16_autocast():
    cfg = load_config("maskdino_r50_coco_instance_seg_50ep", reduced=True)
    model = instantiate(cfg.model).train()
    from maskdino_test_utils import two_image_batch

    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(two_image_batch())
    total = sum(losses.values())
    assert total.dtype == torch.float32 and torch.isfinite(total)
    total.backward()


# ---------------------------------------------------------------- designed predictions
def test_topk_over_queries_times_classes():
    logits = torch.tensor([[5.0, -5.0, 1.0], [4.0, 3.0, -9.0]])
    scores, labels, queries = inference.select_topk_queries(logits, 3, topk=3)
    got = sorted(zip(scores.tolist(), labels.tolist(), queries.tolist()), reverse=True)
    assert [(lab, q) for _, lab, q in got] == [(0, 0), (0, 1), (1, 1)]
    # thing filtering after the top-k (class 0 is the only thing)
    _, labels, queries = inference.select_topk_queries(logits, 3, topk=3, thing_ids=[0])
    assert sorted(zip(labels.tolist(), queries.tolist())) == [(0, 0), (0, 1)]


def test_instance_scores_and_masks():
    mask_logits = torch.tensor([[[2.0, -1.0], [0.5, -3.0]]])
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    inst = inference.instance_inference(
        torch.tensor([0.8]), torch.tensor([4]), mask_logits, boxes, (2, 2)
    )
    assert inst.pred_masks.tolist() == [[[1.0, 0.0], [1.0, 0.0]]]
    mask_score = (torch.sigmoid(torch.tensor(2.0)) + torch.sigmoid(torch.tensor(0.5))) / 2
    assert inst.scores.item() == pytest.approx(0.8 * mask_score.item(), rel=1e-5)
    boxed = inference.instance_inference(
        torch.tensor([0.8]), torch.tensor([4]), mask_logits, boxes, (2, 2), focus_on_box=True
    )
    assert boxed.scores.item() == pytest.approx(0.8)


def test_boxes_scale_over_the_padded_canvas():
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.25]])  # cxcywh over the padded canvas
    xyxy = inference.scale_boxes(boxes, scale_h=200.0, scale_w=400.0)
    assert xyxy.tolist() == [[100.0, 75.0, 300.0, 125.0]]


def test_semantic_inference_variants():
    cls = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 3.0]])  # 2 queries, 2 classes + no-object
    masks = torch.tensor([[[3.0]], [[-1.0]]])
    ce = inference.semantic_inference(cls, masks, True, True, 0.06)
    probs = cls.softmax(-1)[:, :2]
    expected = probs[0] * torch.sigmoid(torch.tensor(3.0)) + probs[1] * torch.sigmoid(
        torch.tensor(-1.0)
    )
    assert torch.allclose(ce[:, 0, 0], expected)
    sig = inference.semantic_inference(cls[:, :2], masks, False, False, 0.06)
    expected = cls[:, :2].sigmoid().T @ masks.sigmoid().view(2)
    assert torch.allclose(sig[:, 0, 0], expected)


def test_panoptic_merging_rules():
    """Designed queries over a 4x4 image; classes 0-1 things, 2 stuff."""
    big = 10.0
    m = torch.full((5, 4, 4), -big)
    m[0, :2, :2] = big  # thing A, top-left
    m[1, :2, 2:] = big  # thing B, top-right
    m[2, 2:, :2] = big  # stuff S, bottom-left
    m[3, 2:, 2:] = big  # stuff S again, bottom-right: merged into the same segment
    m[4] = big  # whole image but low score: dropped by the threshold
    logits = torch.full((5, 3), -big)
    logits[0, 0] = logits[1, 1] = logits[2, 2] = logits[3, 2] = 3.0
    logits[4, 0] = -2.0  # sigmoid 0.12 < 0.25
    seg, info = inference.panoptic_inference(logits, m, [0, 1], 0.25, 0.8, True, 0.06)
    assert info == [
        {"id": 1, "isthing": True, "category_id": 0},
        {"id": 2, "isthing": True, "category_id": 1},
        {"id": 3, "isthing": False, "category_id": 2},
    ]
    assert seg.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 3, 3], [3, 3, 3, 3]]
    # Overlap rule: a query that wins less than 80% of its own mask is not a segment.
    m[1, 2:, 2:] = big  # B now claims 8 pixels but wins only 4 against the stuff queries
    logits[1, 1] = -0.5  # kept (sigmoid 0.38 > 0.25) but outscored by the stuff query
    seg, info = inference.panoptic_inference(logits, m, [0, 1], 0.25, 0.8, True, 0.06)
    assert [s["category_id"] for s in info] == [0, 2]
    # No query above the threshold: an all-void map.
    seg, info = inference.panoptic_inference(logits - 20, m, [0, 1], 0.25, 0.8, True, 0.06)
    assert info == [] and int(seg.abs().sum()) == 0


def test_lower_threshold_override_reaches_the_model():
    cfg = load_config("maskdino_r50_coco_panoptic_seg_50ep", reduced=True)
    LazyConfig.apply_overrides(cfg, ["model.object_mask_threshold=0.5"])
    assert instantiate(cfg.model).object_mask_threshold == 0.5


@pytest.mark.gpu
def test_cuda_fp32_and_bf16(panoptic_model):
    model = panoptic_model.cuda()
    try:
        batch = images((64, 80, 64, 80))
        with torch.no_grad():
            out = model(batch)[0]
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out16 = model(batch)[0]
        error = (out16["sem_seg"] - out["sem_seg"]).abs().max() / out["sem_seg"].abs().max()
        assert out["sem_seg"].is_cuda and error < 0.1
    finally:
        panoptic_model.cpu()
