"""The order-independent comparisons behind --verify, on hand-made outputs."""

from __future__ import annotations

import numpy as np

from detrex_ext.export.parity import (
    compare_instances,
    label_agreement,
    matched_rows_max_diff,
    segment_agreement,
)


def _instances(order, masks, scores=(0.9, 0.9, 0.5), classes=(1, 1, 2)):
    boxes = np.array([[0, 0, 4, 4], [0, 0, 4, 4], [2, 2, 8, 8]], dtype=np.float32)
    return {
        "instance_scores": np.array(scores)[order],
        "instance_classes": np.array(classes)[order],
        "instance_boxes": boxes[order],
        "instance_masks": masks[order],
    }


def test_instances_match_regardless_of_order_and_near_duplicates():
    masks = np.zeros((3, 8, 8), dtype=bool)
    masks[0, :4, :4] = True
    masks[1, :2, :4] = True  # same class, box and score as instance 0, other mask
    masks[2, 2:, 2:] = True
    reference = _instances([0, 1, 2], masks)
    candidate = _instances([2, 1, 0], masks)
    candidate["instance_masks"] = candidate["instance_masks"].astype(np.float32) * 0.9  # probs
    parity = compare_instances(reference, candidate, (8, 8))
    assert parity.unmatched == 0 and parity.min_mask_iou == 1.0
    assert parity.max_box_diff == 0 and parity.max_score_diff == 0


def test_mask_pixels_at_a_tie_are_left_out_of_the_iou():
    masks = np.zeros((3, 8, 8), dtype=bool)
    masks[0, :4, :4] = True
    masks[1, :2, :4] = True
    masks[2, 2:, 2:] = True
    reference = _instances([0, 1, 2], masks)
    candidate = _instances([0, 1, 2], masks)
    logits = np.where(masks, 5.0, -5.0).astype(np.float32)
    logits[2, 2, 2] = -3e-5  # eager's pixel is in the mask; here a rounding below 0 drops it
    logits[2, 7, 0] = 2e-5  # and one a rounding above 0 adds
    candidate["instance_masks"] = logits
    strict = compare_instances(reference, candidate, (8, 8), mask_threshold=0.0)
    assert strict.min_mask_iou == 35 / 37  # 36 pixels of instance 2, one dropped, one added
    tolerant = compare_instances(reference, candidate, (8, 8), mask_threshold=0.0, mask_tie=1e-4)
    assert tolerant.min_mask_iou == 1.0
    logits[2, 7, 1] = 0.5  # a decided pixel that differs still counts
    tolerant = compare_instances(reference, candidate, (8, 8), mask_threshold=0.0, mask_tie=1e-4)
    assert tolerant.min_mask_iou == 35 / 36


def test_instances_of_another_class_or_flagged_invalid_do_not_match():
    masks = np.ones((3, 8, 8), dtype=bool)
    reference = _instances([0, 1, 2], masks)
    candidate = _instances([0, 1, 2], masks, classes=(1, 1, 3))
    assert compare_instances(reference, candidate, (8, 8)).unmatched == 1
    candidate = _instances([0, 1, 2], masks, scores=(0.9, 0.9, 0.5))
    candidate["instance_valid"] = np.array([True, True, False])
    parity = compare_instances(reference, candidate, (8, 8))
    assert parity.num_candidate == 2 and parity.unmatched == 1


def test_rows_are_matched_when_swapped():
    logits = np.arange(12, dtype=np.float32).reshape(4, 3)
    boxes = np.arange(16, dtype=np.float32).reshape(4, 4) / 16
    order = [1, 0, 2, 3]
    diffs, identity = matched_rows_max_diff([logits, boxes], [logits[order] + 1e-6, boxes[order]])
    assert not identity and diffs[0] < 2e-6 and diffs[1] == 0
    diffs, identity = matched_rows_max_diff([logits, boxes], [logits, boxes])
    assert identity and diffs == [0.0, 0.0]


def test_maps_agree_up_to_segment_numbering():
    reference = np.array([[0, 1, 1], [2, 2, 0]])
    renumbered = np.array([[0, 7, 7], [5, 5, 0]])
    assert segment_agreement(reference, renumbered) == 1.0
    assert segment_agreement(reference, np.array([[0, 7, 7], [5, 5, 5]])) == 5 / 6
    assert segment_agreement(reference, np.array([[3, 7, 7], [5, 5, 0]])) == 5 / 6  # void
    assert label_agreement(reference, np.array([[0, 1, 1], [2, 2, 1]])) == 5 / 6
