"""Gather backend of multi-scale deformable attention: one ``embedding_bag`` per call.

Each output row ``out[b, q, h]`` is a weighted sum of ``L * P * 4`` value rows of ``D`` channels
(4 bilinear corners of each of the ``L * P`` sampling points), which is exactly what
``F.embedding_bag(mode="sum", per_sample_weights=...)`` computes, in one vectorised pass over
contiguous rows. The per-level ``grid_sample`` formulation instead permutes the value into
``[B*H, D, H_l, W_l]`` maps and samples every channel plane separately, then multiplies and sums
the ``[B*H, D, Q, P]`` samples; on CPU that costs several times more (see ``tools/benchmark.py``).

Semantics are ``grid_sample(align_corners=False, padding_mode="zeros")``, as the official CUDA op:
location ``loc`` of level l is sampled at pixel ``loc * size - 0.5`` and corners outside the map
read zero. Pixel coordinates and bilinear weights are rounded as ``grid_sample`` rounds them (from
its ``2 * loc - 1`` grid), so the two formulations differ only in the order of the final sums. Instead of testing every corner, each level is padded with a zero border (1 pixel
before, 2 after) and the pixel coordinate clamped to ``[-1, size]``: a point that is entirely
outside then lands on the border with all its weight on zero rows, and a point half inside reads
the border for its outside corners. The clamp also gives such points a zero location gradient, as
``grid_sample`` does.

The backward recomputes the corner rows and weights (cheap next to the gathers) and computes the
gradients of the same floor-based bilinear formula (one-sided at integer pixel coordinates, on the
same side as ``grid_sample``): the value gradient is the transposed gather (entries sorted
by row, then one ``embedding_bag`` over the output gradient), the location and attention-weight
gradients come from the dot products of the output gradient with every corner row.

Precision: coordinates, weights and sums are computed in ``promote(fp32, inputs)``; the result and
the gradients are returned in the dtype of the corresponding input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["msda_gather_backward", "msda_gather_forward"]

# Zero border added around every level map: 1 pixel before, 2 after (see the module docstring).
_PAD_BEFORE, _PAD_AFTER = 1, 2
_INT32_LIMIT = 2**31 - 1
# Bags per step of the backward's corner dot products (their gathered rows: 2 MB at L*P*4 = 64,
# D = 32 in fp32).
_DOT_CHUNK = 256


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _padded_value_rows(value: torch.Tensor, shapes: Sequence[tuple[int, int]], dtype):
    """``[B, S, H, D]`` -> ``[B * S_pad * H, D]`` rows of the zero-bordered level maps."""
    batch, _, heads, head_dim = value.shape
    pad = (0, 0, _PAD_BEFORE, _PAD_AFTER, _PAD_BEFORE, _PAD_AFTER)
    levels, start = [], 0
    for height, width in shapes:
        level = value[:, start : start + height * width].to(dtype)
        start += height * width
        level = F.pad(level.reshape(batch, height, width, heads * head_dim), pad)
        levels.append(level.flatten(1, 2))
    return torch.cat(levels, 1).reshape(-1, head_dim)


class _Samples(NamedTuple):
    """Where the samples of one call read: see ``_samples``."""

    rows: torch.Tensor  # [B*Q*H, L*P*4] corner rows, int32 (int64 for huge inputs)
    pixel: torch.Tensor  # [B, Q, H, L, P, 2] (x, y) pixel coordinate, clamped to [-1, size]
    corner: torch.Tensor  # [B, Q, H, L, P, 2] floor(pixel)
    inside: torch.Tensor | None  # [B, Q, H, L, P, 2] bool: not clamped (``with_inside`` only)
    sizes: torch.Tensor  # [L, 1, 2] (W_l, H_l)
    num_rows: int  # rows of the padded value, B * S_pad * H


def _samples(
    sampling_locations: torch.Tensor,
    shapes: Sequence[tuple[int, int]],
    num_heads: int,
    dtype: torch.dtype,
    with_inside: bool = False,
) -> _Samples:
    """Corner rows (into ``_padded_value_rows``) and pixel coordinates of every sample.

    Corner order inside a sample: (x, y), (x + 1, y), (x, y + 1), (x + 1, y + 1).
    """
    batch, queries, heads, levels, points, _ = sampling_locations.shape
    device = sampling_locations.device
    padded = [(h + _PAD_BEFORE + _PAD_AFTER, w + _PAD_BEFORE + _PAD_AFTER) for h, w in shapes]
    num_rows = batch * sum(h * w for h, w in padded) * num_heads
    index_dtype = torch.int32 if num_rows <= _INT32_LIMIT else torch.int64

    sizes = torch.tensor([(w, h) for h, w in shapes], dtype=dtype, device=device)
    sizes = sizes.view(levels, 1, 2)
    # loc * size - 0.5, rounded exactly as grid_sample computes it from its [-1, 1] grid
    grid = sampling_locations.to(dtype) * 2 - 1
    pixel = (grid + 1) * (sizes / 2) - 0.5
    inside = (pixel >= -1.0) & (pixel <= sizes) if with_inside else None  # False for NaN
    # NaN reads zeros (as the official kernel's bounds test); far-away points land on the border.
    pixel = torch.clamp(pixel.nan_to_num(nan=-1.0), min=torch.full_like(sizes, -1.0), max=sizes)
    corner = pixel.floor()

    padded_x = (corner[..., 0] + _PAD_BEFORE).to(index_dtype)
    padded_y = (corner[..., 1] + _PAD_BEFORE).to(index_dtype)
    starts, strides, offsets, s_pad = [], [], [], 0
    for h_pad, w_pad in padded:
        starts.append(s_pad)
        strides.append(w_pad * num_heads)
        offsets.append([0, num_heads, w_pad * num_heads, (w_pad + 1) * num_heads])
        s_pad += h_pad * w_pad
    as_index = dict(dtype=index_dtype, device=device)
    row_stride = torch.tensor(strides, **as_index).view(levels, 1)
    level_start = torch.tensor(starts, **as_index).view(1, 1, 1, levels, 1)
    image = torch.arange(batch, **as_index).view(batch, 1, 1, 1, 1)
    head = torch.arange(heads, **as_index).view(1, 1, heads, 1, 1)
    base = (image * s_pad + level_start) * num_heads + head  # [B, 1, H, L, 1]
    rows = padded_y * row_stride
    rows.add_(padded_x, alpha=num_heads).add_(base)
    rows = rows.unsqueeze(-1) + torch.tensor(offsets, **as_index).view(levels, 1, 4)
    rows = rows.view(batch * queries * heads, -1)
    return _Samples(rows, pixel, corner, inside, sizes, num_rows)


def _bilinear(samples: _Samples) -> tuple[torch.Tensor, torch.Tensor]:
    """The x weights ``[..., 2]`` (x0 + 1 - x, x - x0) and the y weights, as grid_sample
    rounds them."""
    before = samples.corner + 1 - samples.pixel
    after = samples.pixel - samples.corner
    weight_x = torch.stack((before[..., 0], after[..., 0]), -1)
    weight_y = torch.stack((before[..., 1], after[..., 1]), -1)
    return weight_x, weight_y


def _corner_weights(samples: _Samples, attention_weights: torch.Tensor) -> torch.Tensor:
    """``[B*Q*H, L*P*4]``: bilinear weight of every corner times the attention weight."""
    weight_x, weight_y = _bilinear(samples)
    weights = weight_y[..., :, None] * weight_x[..., None, :]  # [..., 2 (y), 2 (x)]
    weights = weights * attention_weights.to(weights.dtype)[..., None, None]
    return weights.view(samples.rows.shape)


def _unpadded(rows: torch.Tensor, shapes, batch: int, heads: int) -> torch.Tensor:
    """``[B * S_pad * H, D]`` -> ``[B, S, H, D]``: the inverse of ``_padded_value_rows``."""
    head_dim = rows.shape[-1]
    rows = rows.view(batch, -1, heads, head_dim)
    levels, start = [], 0
    for height, width in shapes:
        h_pad, w_pad = height + _PAD_BEFORE + _PAD_AFTER, width + _PAD_BEFORE + _PAD_AFTER
        level = rows[:, start : start + h_pad * w_pad].view(batch, h_pad, w_pad, heads, head_dim)
        levels.append(
            level[:, _PAD_BEFORE : _PAD_BEFORE + height, _PAD_BEFORE : _PAD_BEFORE + width]
        )
        start += h_pad * w_pad
    return torch.cat([level.flatten(1, 2) for level in levels], 1)


def _scatter_rows(rows, weights, grad_bags: torch.Tensor, num_rows: int) -> torch.Tensor:
    """Transpose of the gather: ``out[r] = sum of weights[b, k] * grad_bags[b]`` over the
    entries with ``rows[b, k] == r``; the entries are sorted by row (stable, so deterministic)
    and summed with one ``embedding_bag``. -> ``[num_rows, D]``."""
    sorted_rows, order = rows.reshape(-1).sort(stable=True)
    bag_of_entry = torch.div(order, rows.shape[1], rounding_mode="floor")
    offsets = torch.zeros(num_rows, dtype=torch.int64, device=rows.device)
    counts = torch.bincount(sorted_rows.long(), minlength=num_rows)
    torch.cumsum(counts[:-1], 0, out=offsets[1:])
    return F.embedding_bag(
        bag_of_entry,
        grad_bags,
        offsets,
        per_sample_weights=weights.reshape(-1)[order],
        mode="sum",
    )


def _corner_dots(rows, value_rows: torch.Tensor, grad_bags: torch.Tensor) -> torch.Tensor:
    """``out[b, k] = <grad_bags[b], value_rows[rows[b, k]]>`` -> ``[B*Q*H, L*P*4]``; in chunks
    of bags whose gathered rows stay in cache."""
    out = value_rows.new_empty(rows.shape)
    for start in range(0, rows.shape[0], _DOT_CHUNK):
        chunk = slice(start, start + _DOT_CHUNK)
        gathered = value_rows.index_select(0, rows[chunk].reshape(-1))
        gathered = gathered.view(-1, rows.shape[1], value_rows.shape[1])
        torch.sum(gathered * grad_bags[chunk, None, :], -1, out=out[chunk])
    return out


def msda_gather_forward(
    value: torch.Tensor,
    shapes: Sequence[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Deformable attention forward.

    Shapes: value ``[B, S, H, D]``, sampling_locations ``[B, Q, H, L, P, 2]``, attention_weights
    ``[B, Q, H, L, P]`` -> ``[B, Q, H*D]`` in ``value.dtype``.
    """
    batch, _, heads, head_dim = value.shape
    dtype = _compute_dtype(value, sampling_locations, attention_weights)
    with torch.autocast(value.device.type, enabled=False):
        samples = _samples(sampling_locations, shapes, heads, dtype)
        weights = _corner_weights(samples, attention_weights)
        value_rows = _padded_value_rows(value, shapes, dtype)
        output = F.embedding_bag(samples.rows, value_rows, per_sample_weights=weights, mode="sum")
    return output.view(batch, -1, heads * head_dim).to(value.dtype)


def msda_gather_backward(
    grad_output: torch.Tensor,
    value: torch.Tensor,
    shapes: Sequence[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients ``(value, sampling_locations, attention_weights)`` of ``msda_gather_forward``
    for ``grad_output`` ``[B, Q, H*D]``, each in the dtype (and shape) of its input."""
    batch, _, heads, head_dim = value.shape
    dtype = _compute_dtype(grad_output, value, sampling_locations, attention_weights)
    with torch.autocast(value.device.type, enabled=False):
        samples = _samples(sampling_locations, shapes, heads, dtype, with_inside=True)
        attention = attention_weights.to(dtype)
        grad_bags = grad_output.to(dtype).reshape(-1, head_dim)
        weights = _corner_weights(samples, attention)
        grad_rows = _scatter_rows(samples.rows, weights, grad_bags, samples.num_rows)
        grad_value = _unpadded(grad_rows, shapes, batch, heads)

        # dots[..., iy, ix] = <grad, corner (x + ix, y + iy)>
        value_rows = _padded_value_rows(value, shapes, dtype)
        dots = _corner_dots(samples.rows, value_rows, grad_bags)
        dots = dots.view(*samples.pixel.shape[:-1], 2, 2)
        weight_x, weight_y = _bilinear(samples)
        along_x = (dots * weight_x[..., None, :]).sum(-1)  # [..., 2 (y)]
        along_y = (dots * weight_y[..., :, None]).sum(-2)  # [..., 2 (x)]
        grad_attn = (along_x * weight_y).sum(-1)
        grad_pixel = torch.stack(
            (along_y[..., 1] - along_y[..., 0], along_x[..., 1] - along_x[..., 0]), -1
        )
        # pixel = loc * size - 0.5, clamped: d/dloc = size where the clamp was not active
        grad_loc = grad_pixel * attention[..., None] * samples.sizes * samples.inside
    return (
        grad_value.to(value.dtype),
        grad_loc.to(sampling_locations.dtype),
        grad_attn.to(attention_weights.dtype),
    )
