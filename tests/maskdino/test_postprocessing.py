"""detrex_ext.modeling.postprocessing against hand-computed results."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from detrex_ext.modeling.postprocessing import detector_postprocess, sem_seg_postprocess
from detrex_ext.structures import Boxes, Instances


def test_sem_seg_postprocess_crops_then_resizes():
    padded = torch.zeros(2, 4, 6)
    padded[:, :3, :4] = torch.arange(24, dtype=torch.float32).view(2, 3, 4)
    padded[:, 3:, :] = 100.0  # padding must not leak into the result
    padded[:, :, 4:] = 100.0
    out = sem_seg_postprocess(padded, (3, 4), 6, 8)
    expected = F.interpolate(
        torch.arange(24, dtype=torch.float32).view(1, 2, 3, 4), size=(6, 8), mode="bilinear"
    )[0]
    assert out.shape == (2, 6, 8) and torch.allclose(out, expected)
    assert out.max() < 100


def test_detector_postprocess_scales_clips_and_filters():
    inst = Instances((10, 20))
    inst.pred_boxes = Boxes(
        torch.tensor([[2.0, 1.0, 12.0, 5.0], [18.0, 2.0, 25.0, 8.0], [30.0, 0.0, 40.0, 5.0]])
    )
    inst.scores = torch.tensor([0.9, 0.8, 0.7])
    masks = torch.zeros(3, 10, 20)
    masks[0, 1:5, 2:12] = 1.0
    inst.pred_masks = masks
    out = detector_postprocess(inst, 20, 40)
    assert out.image_size == (20, 40)
    # The third box lies outside the image: empty after clipping, removed.
    assert len(out) == 2 and torch.equal(out.scores, torch.tensor([0.9, 0.8]))
    assert out.pred_boxes.tensor.tolist() == [[4.0, 2.0, 24.0, 10.0], [36.0, 4.0, 40.0, 16.0]]
    assert out.pred_masks.shape == (2, 20, 40) and out.pred_masks.dtype == torch.bool
    assert out.pred_masks[0].sum() == 4 * 2 * 10 * 2
