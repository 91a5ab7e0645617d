"""Flattening a feature pyramid into one token sequence (the layout deformable attention reads)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["flatten_levels"]


def flatten_levels(maps: list[Tensor]) -> tuple[Tensor, list[tuple[int, int]], Tensor]:
    """Concatenate `[B, C, H_l, W_l]` maps, level after level, row-major inside a level.

    Returns:
        tokens `[B, S, C]` (S = sum of H_l * W_l), the spatial shapes `(H_l, W_l)` as Python ints
        (no device sync) and the level start offsets `[L]` (int64, on the maps' device).
    """
    spatial_shapes = [(int(m.shape[2]), int(m.shape[3])) for m in maps]
    tokens = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)
    starts = [0]
    for h, w in spatial_shapes[:-1]:
        starts.append(starts[-1] + h * w)
    level_start_index = torch.as_tensor(starts, dtype=torch.long, device=tokens.device)
    return tokens, spatial_shapes, level_start_index
