"""The batched, fixed-shape post-processing of exported graphs computes what the per-image
inference functions compute (they are the reference), including stuff merging, non-thing pairs
of panoptic models and images where no query is kept; and the export adapter reproduces the
model's own inference end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from maskdino_test_utils import load_config

from detrex_ext.config import instantiate
from detrex_ext.export.parity import compare_instances, label_agreement, segment_agreement
from detrex_projects.maskdino.modeling import export_postprocess as post
from detrex_projects.maskdino.modeling import inference

NUM_CLASSES, NUM_QUERIES, SIZE = 7, 12, (40, 56)
THINGS = [0, 2, 3]


def _raw(seed: int, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, NUM_QUERIES, NUM_CLASSES, generator=g) * 2
    # smooth masks at stride 4: the queries roughly partition the image (each owns the cells a
    # random assignment gives it), with noise, so that segments pass the overlap test
    owner = torch.randint(0, NUM_QUERIES, (batch, 1, 4, 5), generator=g)
    queries = torch.arange(NUM_QUERIES).view(1, -1, 1, 1)
    coarse = (
        torch.where(owner == queries, 6.0, -6.0)
        + torch.randn(batch, NUM_QUERIES, 4, 5, generator=g) * 3
    )
    masks = torch.nn.functional.interpolate(coarse, size=(10, 14), mode="bilinear")
    boxes = torch.rand(batch, NUM_QUERIES, 4, generator=g) * 0.5 + 0.25
    return logits, masks, boxes


def _full(masks):
    return post.resize_masks(masks, SIZE)


@pytest.mark.parametrize("thing_ids", [None, THINGS])
@pytest.mark.parametrize("seed", [0, 1])
def test_instances_equal_per_image_inference(seed, thing_ids):
    logits, masks, boxes = _raw(seed)
    out = post.instance_predictions(
        logits,
        masks,
        boxes,
        num_classes=NUM_CLASSES,
        topk=20,
        image_size=SIZE,
        thing_ids=thing_ids,
    )
    for b in range(logits.shape[0]):
        scores, labels, queries = inference.select_topk_queries(
            logits[b], NUM_CLASSES, 20, thing_ids
        )
        mask_logits = inference.resize_mask_logits(masks[b][queries], SIZE, SIZE, SIZE)
        xyxy = inference.scale_boxes(boxes[b][queries], SIZE[0], SIZE[1])
        expected = inference.instance_inference(scores, labels, mask_logits, xyxy, SIZE)
        reference = {
            "instance_scores": expected.scores.numpy(),
            "instance_classes": expected.pred_classes.numpy(),
            "instance_boxes": expected.pred_boxes.tensor.numpy(),
            "instance_masks": expected.pred_masks.numpy() > 0.5,
        }
        candidate = {key: value[b].numpy() for key, value in out.items()}
        candidate = {
            "instance_scores": candidate["scores"],
            "instance_classes": candidate["classes"],
            "instance_boxes": candidate["boxes"],
            "instance_masks": candidate["mask_logits"] > 0,
            "instance_valid": candidate["valid"],
        }
        if thing_ids is not None:  # the non-thing pairs are flagged, not dropped
            assert candidate["instance_valid"].sum() == len(expected) < 20
        parity = compare_instances(reference, candidate, SIZE)
        assert parity.unmatched == 0 and parity.num_reference == len(expected)
        assert parity.max_box_diff < 1e-6 and parity.max_score_diff < 1e-6
        assert parity.min_mask_iou == 1.0


@pytest.mark.parametrize("semantic_ce_loss", [False, True])
def test_semantic_map_is_the_argmax_of_per_image_scores(semantic_ce_loss):
    logits, masks, _ = _raw(2)
    if semantic_ce_loss:
        logits = torch.cat([logits, torch.randn(*logits.shape[:2], 1)], -1)  # "no object"
    labels = post.semantic_predictions(
        logits,
        _full(masks),
        semantic_ce_loss=semantic_ce_loss,
        transform_eval=True,
        temperature=0.06,
    )
    for b in range(logits.shape[0]):
        full = inference.resize_mask_logits(masks[b], SIZE, SIZE, SIZE)
        scores = inference.semantic_inference(logits[b], full, semantic_ce_loss, True, 0.06)
        assert torch.equal(labels[b], scores.argmax(0))


@pytest.mark.parametrize("seed", range(6))
def test_panoptic_equals_per_image_merge(seed):
    logits, masks, _ = _raw(seed + 10)
    # few labels: several stuff segments of one class are merged into one id
    logits[..., 4:] -= 3.0
    panoptic, table = post.panoptic_predictions(
        logits,
        _full(masks),
        thing_ids=THINGS,
        object_mask_threshold=0.5,
        overlap_threshold=0.8,
        transform_eval=True,
        temperature=0.06,
    )
    assert (table[..., 0] > 0).sum() >= 10  # segments, not an all-void map
    for b in range(logits.shape[0]):
        full = inference.resize_mask_logits(masks[b], SIZE, SIZE, SIZE)
        expected_map, segments_info = inference.panoptic_inference(
            logits[b], full, THINGS, 0.5, 0.8, True, 0.06
        )
        assert torch.equal(panoptic[b], expected_map.long())
        rows = table[b][table[b][:, 0] > 0].tolist()
        assert [{"id": r[1], "isthing": bool(r[3]), "category_id": r[2]} for r in rows] == [
            {"id": s["id"], "isthing": s["isthing"], "category_id": s["category_id"]}
            for s in segments_info
        ]


def test_panoptic_without_kept_queries_is_void():
    logits, masks, _ = _raw(3)
    panoptic, table = post.panoptic_predictions(
        logits - 100,
        _full(masks),
        thing_ids=THINGS,
        object_mask_threshold=0.25,
        overlap_threshold=0.8,
        transform_eval=True,
        temperature=0.06,
    )
    assert not panoptic.any() and not table[..., 0].any()


def test_segment_ids_merge_stuff_in_query_order():
    # queries: thing(1), stuff A, thing(1), stuff A again, no segment, stuff B, stuff A
    segment = torch.tensor([[True, True, True, True, False, True, True]])
    labels = torch.tensor([[1, 4, 1, 4, 4, 5, 4]])
    thing = labels < 3
    ids, new = post._segment_ids(segment, labels, thing)
    assert ids.tolist() == [[1, 2, 3, 2, 0, 4, 2]]
    assert new.tolist() == [[True, True, True, False, False, True, False]]


@pytest.fixture(scope="module")
def panoptic_model():
    torch.manual_seed(0)
    cfg = load_config("maskdino_r50_coco_panoptic_seg_50ep", reduced=True)
    cfg.model.object_mask_threshold = 0.0  # random weights score ~0.01: keep every query
    return instantiate(cfg.model).eval()


def test_adapter_reproduces_the_models_inference(panoptic_model):
    adapter = panoptic_model.export_adapter()
    images = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8)
    with torch.no_grad():
        outputs = dict(zip(adapter.output_names, adapter(images)))
    reference = adapter.reference_predictions(images)
    assert outputs["instance_masks"].dtype == torch.float32  # logits by default
    for b in range(2):
        candidate = {k: v[b].numpy() for k, v in outputs.items()}
        parity = compare_instances(reference[b], candidate, (64, 96), mask_threshold=0.0)
        assert parity.unmatched == 0 and parity.num_reference > 0
        assert parity.max_box_diff < 1e-5 and parity.max_score_diff < 1e-5
        assert parity.min_mask_iou > 0.99
        assert label_agreement(reference[b]["sem_seg"], candidate["sem_seg"]) == 1.0
        assert segment_agreement(reference[b]["panoptic_seg"], candidate["panoptic_seg"]) == 1.0
        assert np.array_equal(
            reference[b]["panoptic_segments"],
            candidate["panoptic_segments"][candidate["panoptic_segments"][:, 0] > 0],
        )


def test_adapter_raw_outputs_and_mask_formats(panoptic_model):
    images = torch.randint(0, 256, (1, 3, 64, 96), dtype=torch.uint8)
    raw = panoptic_model.export_adapter(postprocess=False)
    assert raw.output_names == ("pred_logits", "pred_boxes", "pred_masks")
    formats = {
        f: panoptic_model.export_adapter(mask_format=f) for f in ("logits", "prob", "binary")
    }
    with torch.no_grad():
        logits, boxes, masks = raw(images)
        outputs = {f: dict(zip(a.output_names, a(images))) for f, a in formats.items()}
    assert masks.shape == (1, 16, 16, 24) and logits.shape == (1, 16, 133)
    mask_logits = outputs["logits"]["instance_masks"]
    torch.testing.assert_close(outputs["prob"]["instance_masks"], mask_logits.sigmoid())
    assert torch.equal(outputs["binary"]["instance_masks"], mask_logits > 0)
    torch.testing.assert_close(outputs["binary"]["pred_logits"], logits)


def test_adapter_refuses_sizes_off_the_stride(panoptic_model):
    with pytest.raises(ValueError, match="800x1216"):
        panoptic_model.export_adapter().check_input_size(800, 1210)
