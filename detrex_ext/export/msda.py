"""Export lowerings of multi-scale deformable attention (``torch.ops.detrex_ext.ms_deform_attn``).

An exported graph cannot keep our custom op: ONNX has no such operator, and a ``.pt2`` holding it
only loads where ``detrex_ext`` is imported. While exporting, the op is replaced by plain ATen ops
in one of two lowerings, both computing the op's formula (bilinear sampling with
``align_corners=False`` and zero padding, weighted by the attention weights):

* ``grid_sample``: one ``grid_sample`` per level, exactly the eager PyTorch path (ONNX
  ``GridSample``, opset >= 16);
* ``gather``: the bilinear sampling written out: each level map is zero-padded by one pixel, the
  four corners of every sampling point are read with one ``index_select`` (ONNX ``Gather``) and
  blended with their bilinear x attention weights by one ``matmul``. No ``GridSample``: several
  TensorRT builds miscompute GridSample-based deformable attention (NVIDIA/TensorRT #4813).

Both need the level sizes as Python ints (``shapes_hint``), which is how every model of this
project calls the op; shapes given only as a tensor raise a clear error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from detrex_ext.layers import multi_scale_deform_attn_op  # noqa: F401  (defines the op)
from detrex_ext.layers.multi_scale_deform_attn_op import grid_sample_attention

__all__ = [
    "MSDA_LOWERINGS",
    "lowered_deformable_attention",
    "msda_decomposition_table",
    "msda_gather",
    "msda_grid_sample",
]

MSDA_LOWERINGS = ("grid_sample", "gather")


def _level_shapes(shapes_hint: Sequence[int] | None) -> list[tuple[int, int]]:
    if shapes_hint is None:
        raise ValueError(
            "deformable attention was called with spatial_shapes as a tensor only; exporting needs "
            "the level sizes as Python ints: pass `spatial_shapes` as a list of (H_l, W_l) tuples "
            "(as detrex_ext's modules do), so the exported graph has static level sizes"
        )
    flat = [int(v) for v in shapes_hint]
    return [(flat[2 * i], flat[2 * i + 1]) for i in range(len(flat) // 2)]


def msda_grid_sample(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    shapes_hint: Sequence[int] | None,
) -> torch.Tensor:
    """The op as one ``grid_sample`` per level: the eager PyTorch path's own computation
    (:func:`~detrex_ext.layers.multi_scale_deform_attn_op.grid_sample_attention`).

    Shapes: value ``[B, S, H, Dh]``, sampling_locations ``[B, Q, H, L, P, 2]`` (normalised x, y),
    attention_weights ``[B, Q, H, L, P]`` -> ``[B, Q, H * Dh]``.
    """
    dtype = torch.promote_types(value.dtype, torch.float32)
    return grid_sample_attention(
        value, _level_shapes(shapes_hint), sampling_locations, attention_weights, dtype
    )


def _corner_indices_and_weights(
    locations: torch.Tensor, weights: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear corners of ``[..., P, 2]`` normalised locations on an ``height x width`` map that
    is zero-padded by one pixel on every side.

    Returns:
        flat indices into the padded ``(height + 2) * (width + 2)`` map ``[..., P * 4]`` (int64)
        and the corner weights times ``weights [..., P]``, ``[..., P * 4]``. Corners outside the
        map are clamped onto the zero border, so they contribute nothing (``padding_mode=zeros``).
    """
    x = locations[..., 0] * width - 0.5  # align_corners=False: pixel centres at i + 0.5
    y = locations[..., 1] * height - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    # -1 and width (height) are the zero border; anything further out reads the border too.
    xs = [x0.clamp(-1, width), (x0 + 1).clamp(-1, width)]
    ys = [y0.clamp(-1, height), (y0 + 1).clamp(-1, height)]
    wx = [1 - fx, fx]
    wy = [1 - fy, fy]
    indices, corner_weights = [], []
    for j in range(2):
        for i in range(2):
            indices.append(((ys[j] + 1) * (width + 2) + xs[i] + 1).long())
            corner_weights.append(wy[j] * wx[i] * weights)
    return torch.stack(indices, -1).flatten(-2), torch.stack(corner_weights, -1).flatten(-2)


def msda_gather(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    shapes_hint: Sequence[int] | None,
) -> torch.Tensor:
    """The op with explicit bilinear sampling: Pad, Gather, Mul, MatMul (no GridSample).

    Same arguments, shapes and result as :func:`msda_grid_sample`.
    """
    shapes = _level_shapes(shapes_hint)
    batch, _, heads, head_dim = value.shape
    num_queries, num_points = sampling_locations.shape[1], sampling_locations.shape[4]
    dtype = torch.promote_types(value.dtype, torch.float32)
    per_head = value.to(dtype).transpose(1, 2)  # [B, H, S, Dh]
    locations = sampling_locations.to(dtype).transpose(1, 2)  # [B, H, Q, L, P, 2]
    weights = attention_weights.to(dtype).transpose(1, 2)  # [B, H, Q, L, P]
    # row offset of each (image, head) map in the stacked padded maps
    map_ids = torch.arange(batch * heads, device=value.device).view(batch, heads, 1, 1)
    output = None
    start = 0
    for level, (height, width) in enumerate(shapes):
        padded_size = (height + 2) * (width + 2)
        level_map = per_head[:, :, start : start + height * width]
        start += height * width
        level_map = level_map.reshape(batch * heads, height, width, head_dim)
        level_map = F.pad(level_map, (0, 0, 1, 1, 1, 1)).reshape(-1, head_dim)
        index, corner_weights = _corner_indices_and_weights(
            locations[:, :, :, level], weights[:, :, :, level], height, width
        )  # [B, H, Q, P*4]
        index = index + map_ids * padded_size
        corners = level_map.index_select(0, index.flatten())
        corners = corners.view(batch * heads, num_queries, num_points * 4, head_dim)
        corner_weights = corner_weights.view(batch * heads, num_queries, 1, num_points * 4)
        contribution = torch.matmul(corner_weights, corners)  # [B*H, Q, 1, Dh]
        output = contribution if output is None else output + contribution
    output = output.view(batch, heads, num_queries, head_dim).transpose(1, 2)
    return output.reshape(batch, num_queries, heads * head_dim).to(value.dtype).contiguous()


_LOWERINGS: dict[str, Callable[..., torch.Tensor]] = {
    "grid_sample": msda_grid_sample,
    "gather": msda_gather,
}


def msda_decomposition_table(lowering: str) -> dict:
    """``{torch.ops.detrex_ext.ms_deform_attn.default: lowering}`` for
    ``ExportedProgram.run_decompositions`` (only the op is decomposed)."""
    if lowering not in _LOWERINGS:
        raise ValueError(
            f"unknown deformable-attention lowering {lowering!r}; choose one of "
            f"{', '.join(MSDA_LOWERINGS)}"
        )
    return {torch.ops.detrex_ext.ms_deform_attn.default: _LOWERINGS[lowering]}


@contextlib.contextmanager
def lowered_deformable_attention(lowering: str) -> Iterator[None]:
    """Within the block, ``MultiScaleDeformableAttention`` calls the lowering instead of the op.

    Tracing then records the lowering directly, which spares the second trace that
    ``run_decompositions`` costs (as long as the first). Only the call site in
    ``detrex_ext.layers.multi_scale_deform_attn`` is swapped, for the duration of the block;
    calls with tensor spatial shapes keep the op (``msda_decomposition_table`` lowers those).
    """
    from detrex_ext.layers import multi_scale_deform_attn as call_site

    if lowering not in _LOWERINGS:
        raise ValueError(
            f"unknown lowering {lowering!r}; choose one of {', '.join(MSDA_LOWERINGS)}"
        )
    op_call = call_site.multi_scale_deformable_attn
    lowered = _LOWERINGS[lowering]

    def call(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        if isinstance(spatial_shapes, torch.Tensor):
            return op_call(
                value, spatial_shapes, level_start_index, sampling_locations, attention_weights
            )
        hint = [int(side) for hw in spatial_shapes for side in hw]
        return lowered(value, None, None, sampling_locations, attention_weights, hint)

    call_site.multi_scale_deformable_attn = call
    try:
        yield
    finally:
        call_site.multi_scale_deformable_attn = op_call
