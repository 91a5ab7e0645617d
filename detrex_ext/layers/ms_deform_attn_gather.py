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
    """Where the samples of one call read: see ``_samples``. The per-sample quantities are
    ``[B, Q, H, L, P]`` planes, one per axis, so that every elementwise step runs over long rows
    (a trailing axis of 2 or 4 makes each step several times slower on CPU)."""

    rows: torch.Tensor  # [B*Q*H, L*P*4] corner rows, int32 (int64 for huge inputs)
    pixel_x: torch.Tensor  # pixel coordinates, clamped to [-1, size]
    pixel_y: torch.Tensor
    corner_x: torch.Tensor  # floor(pixel)
    corner_y: torch.Tensor
    inside_x: torch.Tensor | None  # bool: not clamped (``with_inside`` only)
    inside_y: torch.Tensor | None
    width: torch.Tensor  # [L, P] W_l of every (level, point)
    height: torch.Tensor  # [L, P] H_l
    num_rows: int  # rows of the padded value, B * S_pad * H


def _per_level_point(values: Sequence, points: int, **like) -> torch.Tensor:
    """``[L, P]`` table of one value per level (contiguous: it broadcasts over ``[..., L, P]``
    planes along 16-element rows instead of 4-element ones)."""
    return torch.tensor(values, **like).view(-1, 1).expand(-1, points).contiguous()


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

    as_float = dict(dtype=dtype, device=device)
    width = _per_level_point([w for _, w in shapes], points, **as_float)
    height = _per_level_point([h for h, _ in shapes], points, **as_float)
    # loc * size - 0.5, rounded exactly as grid_sample computes it from its [-1, 1] grid
    grid = sampling_locations.to(dtype) * 2 - 1
    pixel_x = (grid[..., 0] + 1) * (width / 2) - 0.5
    pixel_y = (grid[..., 1] + 1) * (height / 2) - 0.5
    inside_x = inside_y = None
    if with_inside:  # False for NaN
        inside_x = (pixel_x >= -1.0) & (pixel_x <= width)
        inside_y = (pixel_y >= -1.0) & (pixel_y <= height)
    # NaN reads zeros (as the official kernel's bounds test); far-away points land on the border.
    pixel_x = pixel_x.nan_to_num_(nan=-1.0).clamp_(min=-1.0)
    pixel_y = pixel_y.nan_to_num_(nan=-1.0).clamp_(min=-1.0)
    pixel_x, pixel_y = torch.minimum(pixel_x, width), torch.minimum(pixel_y, height)
    corner_x, corner_y = pixel_x.floor(), pixel_y.floor()

    starts, s_pad = [], 0
    for h_pad, w_pad in padded:
        starts.append(s_pad)
        s_pad += h_pad * w_pad
    as_index = dict(dtype=index_dtype, device=device)
    row_stride = _per_level_point([w_pad * num_heads for _, w_pad in padded], points, **as_index)
    level_start = _per_level_point(starts, points, **as_index)
    image = torch.arange(batch, **as_index).view(batch, 1, 1, 1, 1)
    head = torch.arange(heads, **as_index).view(1, 1, heads, 1, 1)
    base = ((image * s_pad + level_start) * num_heads + head).contiguous()  # [B, 1, H, L, P]
    rows = (corner_y + _PAD_BEFORE).to(index_dtype).mul_(row_stride)
    rows.add_((corner_x + _PAD_BEFORE).to(index_dtype), alpha=num_heads).add_(base)
    below = rows + row_stride
    rows = torch.stack((rows, rows + num_heads, below, below + num_heads), -1)
    return _Samples(
        rows.view(batch * queries * heads, -1),
        pixel_x,
        pixel_y,
        corner_x,
        corner_y,
        inside_x,
        inside_y,
        width,
        height,
        num_rows,
    )


def _bilinear(samples: _Samples) -> tuple[torch.Tensor, ...]:
    """The x weights (x0 + 1 - x, x - x0) and the y weights, as grid_sample rounds them:
    four ``[B, Q, H, L, P]`` planes ``(x_before, x_after, y_before, y_after)``."""
    return (
        samples.corner_x + 1 - samples.pixel_x,
        samples.pixel_x - samples.corner_x,
        samples.corner_y + 1 - samples.pixel_y,
        samples.pixel_y - samples.corner_y,
    )


def _corner_weights(
    samples: _Samples, bilinear: tuple[torch.Tensor, ...], attention_weights: torch.Tensor
) -> torch.Tensor:
    """``[B*Q*H, L*P*4]``: bilinear weight of every corner (``bilinear``, the planes of
    ``_bilinear(samples)``) times the attention weight."""
    x_before, x_after, y_before, y_after = bilinear
    attention = attention_weights.to(x_before.dtype)
    weights = torch.stack(
        (
            y_before * x_before * attention,
            y_before * x_after * attention,
            y_after * x_before * attention,
            y_after * x_after * attention,
        ),
        -1,
    )
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
        per_sample_weights=weights.reshape(-1).index_select(0, order),
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
        weights = _corner_weights(samples, _bilinear(samples), attention_weights)
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
        bilinear = _bilinear(samples)  # shared by the weights and the location gradient
        weights = _corner_weights(samples, bilinear, attention)
        grad_rows = _scatter_rows(samples.rows, weights, grad_bags, samples.num_rows)
        grad_value = _unpadded(grad_rows, shapes, batch, heads)

        # dot products of the output gradient with the corners (x + ix, y + iy)
        value_rows = _padded_value_rows(value, shapes, dtype)
        dots = _corner_dots(samples.rows, value_rows, grad_bags)
        dot_00, dot_01, dot_10, dot_11 = dots.view(*samples.pixel_x.shape, 4).unbind(-1)
        x_before, x_after, y_before, y_after = bilinear
        along_x_top = dot_00 * x_before + dot_01 * x_after  # interpolated along x, row y
        along_x_bottom = dot_10 * x_before + dot_11 * x_after  # row y + 1
        along_y_left = dot_00 * y_before + dot_10 * y_after
        along_y_right = dot_01 * y_before + dot_11 * y_after
        grad_attn = along_x_top * y_before + along_x_bottom * y_after
        # pixel = loc * size - 0.5, clamped: d/dloc = size where the clamp was not active
        grad_x = (along_y_right - along_y_left) * attention * samples.width * samples.inside_x
        grad_y = (along_x_bottom - along_x_top) * attention * samples.height * samples.inside_y
        grad_loc = torch.stack((grad_x, grad_y), -1)
    return (
        grad_value.to(value.dtype),
        grad_loc.to(sampling_locations.dtype),
        grad_attn.to(attention_weights.dtype),
    )
