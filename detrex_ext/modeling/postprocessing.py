"""Resize model outputs from the padded network input back to the original image size.

These follow detectron2's functions of the same names (`detectron2.modeling.postprocessing`),
so that models written for detectron2 post-process identically:

* `sem_seg_postprocess` crops the padding off a per-pixel map and resizes it bilinearly.
* `detector_postprocess` rescales an `Instances` from the network input size to the requested
  output size: boxes are scaled and clipped, empty boxes dropped, full-image masks resized.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["sem_seg_postprocess", "detector_postprocess"]


def sem_seg_postprocess(
    result: Tensor, img_size: tuple[int, int], output_height: int, output_width: int
) -> Tensor:
    """Crop the padding off a per-pixel prediction and resize it to the output resolution.

    Args:
        result: per-pixel maps of the padded input, `[C, H_pad, W_pad]` (any float dtype).
        img_size: `(h, w)`, the size of the image inside the padded canvas (before padding).
        output_height, output_width: the wanted output size (usually the original image size).

    Returns:
        `[C, output_height, output_width]`, bilinear with `align_corners=False`. When the crop
        already has the output size the resize is the identity (scale 1 samples exactly on the
        source pixels), so the crop itself is returned: it may share memory with `result`.
    """
    cropped = result[:, : img_size[0], : img_size[1]]
    if tuple(cropped.shape[-2:]) == (int(output_height), int(output_width)):
        return cropped.contiguous()
    result = cropped.expand(1, -1, -1, -1)
    result = F.interpolate(
        result, size=(int(output_height), int(output_width)), mode="bilinear", align_corners=False
    )
    return result[0]


def detector_postprocess(
    results, output_height: int, output_width: int, mask_threshold: float = 0.5
):
    """Rescale detections from the network input size to `(output_height, output_width)`.

    Boxes (`pred_boxes` or `proposal_boxes`, absolute xyxy) are scaled by the size ratio, clipped
    to the output size, and instances whose box becomes empty are removed. Full-image masks
    `pred_masks` `[N, h, w]` (the input size) are resized bilinearly to the output size; float
    masks are thresholded at `mask_threshold`, boolean masks stay boolean.

    Args:
        results: an `Instances` whose `image_size` is the network input size `(h, w)`.
        output_height, output_width: the wanted output size.
        mask_threshold: threshold for float masks after resizing.

    Returns:
        a new `Instances` with `image_size == (output_height, output_width)`.
    """
    from detrex_ext.structures import Instances

    in_h, in_w = results.image_size
    scale_x, scale_y = output_width / in_w, output_height / in_h
    results = Instances((int(output_height), int(output_width)), **results.get_fields())

    if results.has("pred_boxes"):
        boxes = results.pred_boxes
    elif results.has("proposal_boxes"):
        boxes = results.proposal_boxes
    else:
        raise ValueError("detector_postprocess needs `pred_boxes` or `proposal_boxes`")
    boxes.scale(scale_x, scale_y)
    boxes.clip(results.image_size)
    results = results[boxes.nonempty()]

    if results.has("pred_masks") and len(results) > 0:
        masks = results.pred_masks
        if masks.dim() != 3:
            raise ValueError(
                f"detector_postprocess expects full-image masks [N, H, W], got {tuple(masks.shape)}"
            )
        is_bool = masks.dtype == torch.bool
        resized = F.interpolate(
            masks[:, None].float(),
            size=(int(output_height), int(output_width)),
            mode="bilinear",
            align_corners=False,
        )[:, 0]
        results.pred_masks = resized > (0.5 if is_bool else mask_threshold)
    return results
