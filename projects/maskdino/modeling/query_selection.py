"""Two-stage query selection helpers: encoder-token proposals and mask-enhanced anchor boxes.

* `encoder_output_proposals` gives every memory token a proposal box (its pixel centre, a size
  that doubles per level) as logits, and marks border tokens invalid.
* `masks_to_anchor_boxes` turns the predicted masks of the selected queries into anchor boxes
  (Mask DINO's "mask-enhanced box initialisation"), in the two official flavours.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detrex_ext.layers import box_xyxy_to_cxcywh, inverse_sigmoid, masks_to_boxes

__all__ = ["encoder_output_proposals", "masks_to_anchor_boxes"]


def encoder_output_proposals(
    memory: Tensor, spatial_shapes: list[tuple[int, int]]
) -> tuple[Tensor, Tensor]:
    """Proposals for every token of a flattened pyramid (no padding masks).

    Level `lvl` (in the given order) gets boxes of width = height = 0.05 * 2**lvl centred on the
    pixel centres. A proposal is valid when all four coordinates lie in (0.01, 0.99); invalid
    proposals become +inf logits and their memory rows are zeroed.

    Args:
        memory: `[B, S, D]` flattened features.
        spatial_shapes: `(H_l, W_l)` per level, `sum(H_l * W_l) == S`.

    Returns:
        output_memory `[B, S, D]` and proposal logits `[B, S, 4]` (cx, cy, w, h).
    """
    batch = memory.shape[0]
    proposals = []
    for lvl, (h, w) in enumerate(spatial_shapes):
        grid_y, grid_x = torch.meshgrid(
            torch.linspace(0, h - 1, h, dtype=torch.float32, device=memory.device),
            torch.linspace(0, w - 1, w, dtype=torch.float32, device=memory.device),
            indexing="ij",
        )
        # Python-scalar divisions: no small tensor is copied to the device.
        grid = torch.stack([(grid_x + 0.5) / w, (grid_y + 0.5) / h], -1)
        wh = torch.ones_like(grid) * 0.05 * (2.0**lvl)
        proposals.append(torch.cat((grid, wh), -1).view(-1, 4))
    proposals = torch.cat(proposals, 0)[None].expand(batch, -1, -1)
    valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1, keepdim=True)
    proposals = torch.log(proposals / (1 - proposals))
    proposals = proposals.masked_fill(~valid, float("inf"))
    output_memory = memory.masked_fill(~valid, 0.0)
    return output_memory, proposals


def masks_to_anchor_boxes(mask_logits: Tensor, box_type: str) -> Tensor:
    """Mask-enhanced anchor initialisation: predicted masks -> anchor logits.

    Args:
        mask_logits: `[B, Q, h, w]` mask logits of the selected queries (stride 4).
        box_type: "mask2box" (inclusive max, official fast path) or "bitmask" (detectron2's
            exclusive max).

    Returns:
        `[B, Q, 4]` inverse-sigmoid of (cx, cy, w, h) normalised by (w, h); no gradient.
    """
    b, q, h, w = mask_logits.shape
    binary = mask_logits.detach().flatten(0, 1) > 0
    if box_type == "mask2box":
        # Inclusive max; empty masks give (1e8, 1e8, 0, 0) like the official `masks_to_boxes`.
        boxes = masks_to_boxes(binary, exclusive_max=False, empty_box=(1e8, 1e8, 0.0, 0.0))
    elif box_type == "bitmask":
        # detectron2 BitMasks.get_bounding_boxes: exclusive max, empty masks give zeros.
        boxes = masks_to_boxes(binary, exclusive_max=True)
    else:
        raise ValueError(
            f"unknown initialize_box_type {box_type!r}; use 'no', 'bitmask' or 'mask2box'"
        )
    cx, cy, bw, bh = box_xyxy_to_cxcywh(boxes).unbind(-1)
    boxes = torch.stack([cx / w, cy / h, bw / w, bh / h], -1)
    return inverse_sigmoid(boxes.reshape(b, q, 4))
