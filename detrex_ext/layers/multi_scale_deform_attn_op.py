"""Multi-scale deformable attention as a PyTorch custom op, with a pluggable backend.

``multi_scale_deformable_attn`` computes, for every query q, head h and channel d::

    out[b, q, h*Dh + d] = sum_{l, p} A[b, q, h, l, p] * bilinear(V_l[b, :, :, h, d], loc[b, q, h, l, p])

where ``V_l`` is level l of ``value`` reshaped to ``[H_l, W_l]`` and ``loc`` is a normalised
(x, y) location in [0, 1]. Sampling follows the official Deformable-DETR CUDA kernel, i.e.
``grid_sample(align_corners=False, padding_mode="zeros")``: the pixel coordinate is
``loc * size - 0.5`` and bilinear corners outside the map contribute zero.

The op is registered as ``torch.ops.detrex_ext.ms_deform_attn`` (forward) and
``torch.ops.detrex_ext.ms_deform_attn_backward`` with fake (meta) kernels and an autograd formula,
so it works under ``torch.compile(fullgraph=True)`` and ``torch.export``. Defining the op happens
when this module is imported (PyTorch needs op definitions before tracing or loading an exported
program); nothing else is registered.

Backends, chosen per call inside the op:

* ``pytorch``: ``grid_sample`` per level (CPU and GPU), the reference formulation;
* ``gather``: ``detrex_ext.layers.ms_deform_attn_gather``, one ``embedding_bag`` over the 4
  bilinear corners of every sample (pure PyTorch, any device; several times faster on CPU);
* ``triton``: ``detrex_ext.layers.ms_deform_attn_triton`` (``msda_forward`` / ``msda_backward``);
* ``auto`` (default): Triton for CUDA tensors when that module reports ``is_available()``,
  gather for CPU tensors with heads of at least 32 channels (every released config; with fewer
  channels per head ``grid_sample``'s per-channel cost is lower than the gather's per-sample
  index work, e.g. the demo config's 16), otherwise ``pytorch``.

Select with the environment variable ``DETREX_MSDA_BACKEND`` (auto | pytorch | gather | triton) or
``set_msda_backend(name)``, which takes precedence. The first call on each path logs one line
saying which path is active.

Precision: ``value`` may be fp32, fp64, bf16 or fp16. The PyTorch path samples and accumulates in
at least fp32 (locations and weights are never rounded to half precision) with autocast disabled,
and returns the output in ``value.dtype``. Gradients come back in the dtype of their input.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from types import ModuleType

import torch
import torch.nn.functional as F

from .ms_deform_attn_gather import msda_gather_backward, msda_gather_forward

__all__ = [
    "get_msda_backend",
    "multi_scale_deformable_attn",
    "multi_scale_deformable_attn_pytorch",
    "set_msda_backend",
]

logger = logging.getLogger(__name__)

MSDA_BACKENDS = ("auto", "pytorch", "gather", "triton")
_ENV_VAR = "DETREX_MSDA_BACKEND"
_backend_override: str | None = None
_logged_paths: set[tuple[str, str]] = set()

SpatialShapes = torch.Tensor | Sequence[Sequence[int]]


# ----------------------------------------------------------------------------------------------
# Backend selection
# ----------------------------------------------------------------------------------------------
def _check_backend_name(name: str, source: str) -> str:
    name = name.strip().lower()
    if name not in MSDA_BACKENDS:
        raise ValueError(
            f"Unknown deformable-attention backend {name!r} (from {source}); "
            f"choose one of {', '.join(MSDA_BACKENDS)}."
        )
    return name


def set_msda_backend(name: str | None) -> None:
    """Force the backend of ``multi_scale_deformable_attn`` for this process.

    Args:
        name: ``"auto"``, ``"pytorch"``, ``"gather"`` or ``"triton"``; ``None`` returns control to the
            ``DETREX_MSDA_BACKEND`` environment variable.
    """
    global _backend_override
    _backend_override = None if name is None else _check_backend_name(name, "set_msda_backend")


def get_msda_backend() -> str:
    """The requested backend: ``set_msda_backend``'s value, else ``$DETREX_MSDA_BACKEND``, else auto."""
    if _backend_override is not None:
        return _backend_override
    return _check_backend_name(os.environ.get(_ENV_VAR, "auto"), f"${_ENV_VAR}")


def _triton_module() -> ModuleType | None:
    """The Triton backend module if it imports and reports itself available, else ``None``."""
    try:
        from detrex_ext.layers import ms_deform_attn_triton
    except ImportError:
        return None
    try:
        return ms_deform_attn_triton if ms_deform_attn_triton.is_available() else None
    except Exception as exc:  # a broken Triton install must not break the PyTorch path
        logger.debug("Triton deformable attention is unavailable: %s", exc)
        return None


# auto: the gather path on CPU from this many channels per head (measured: at 16 the grid_sample
# path is as fast in the forward and 1-2.4x faster in the backward; at 32 gather takes 0.3-0.4x
# of its forward and 0.5-0.9x of its backward time).
_GATHER_HEAD_DIM = 32
_PATH_NAMES = {"triton": "Triton", "gather": "PyTorch gather", "pytorch": "PyTorch grid_sample"}


def _resolve_backend(value: torch.Tensor) -> tuple[str, ModuleType | None]:
    """The path of this call ("triton", "gather" or "pytorch") and the Triton module if used."""
    requested = get_msda_backend()
    triton = None if requested in ("pytorch", "gather") else _triton_module()
    if requested == "triton" and triton is None:
        raise RuntimeError(
            f"{_ENV_VAR}=triton (or set_msda_backend('triton')) was requested, but the Triton "
            "deformable-attention kernel is not available here (it needs the `triton` package and "
            "a CUDA device, or TRITON_INTERPRET=1). Use the 'pytorch', 'gather' or 'auto' backend "
            "instead."
        )
    use_triton = triton is not None and (requested == "triton" or value.is_cuda)
    if use_triton:
        path = "triton"
    elif requested == "gather" or (
        requested == "auto" and value.device.type == "cpu" and value.shape[-1] >= _GATHER_HEAD_DIM
    ):
        path = "gather"
    else:
        path = "pytorch"
    if (requested, path) not in _logged_paths:
        _logged_paths.add((requested, path))
        logger.info(
            "Multi-scale deformable attention: using the %s implementation (%s=%s, %s tensors).",
            _PATH_NAMES[path],
            _ENV_VAR,
            requested,
            value.device.type,
        )
    return path, (triton if use_triton else None)


# ----------------------------------------------------------------------------------------------
# Pure-PyTorch implementation
# ----------------------------------------------------------------------------------------------
def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _level_shapes(spatial_shapes: torch.Tensor, shapes_hint: Sequence[int] | None) -> list[tuple]:
    flat = list(shapes_hint) if shapes_hint is not None else spatial_shapes.flatten().tolist()
    return [(flat[2 * i], flat[2 * i + 1]) for i in range(len(flat) // 2)]


def _level_value_maps(value: torch.Tensor, shapes: list[tuple], dtype: torch.dtype):
    """Yield each level of ``value [B, S, H, Dh]`` as a ``[B*H, Dh, H_l, W_l]`` map."""
    batch, _, heads, head_dim = value.shape
    start = 0
    for height, width in shapes:
        level = value[:, start : start + height * width].to(dtype)
        start += height * width
        yield level.permute(0, 2, 3, 1).reshape(batch * heads, head_dim, height, width)


def _per_level(tensor: torch.Tensor, level: int, dtype: torch.dtype) -> torch.Tensor:
    """``[B, Q, H, L, P, *rest]`` -> level ``level`` as ``[B*H, Q, P, *rest]``."""
    return tensor[:, :, :, level].to(dtype).transpose(1, 2).flatten(0, 1)


def _per_level_points_first(tensor: torch.Tensor, level: int, dtype: torch.dtype) -> torch.Tensor:
    """``[B, Q, H, L, P, *rest]`` -> level ``level`` as ``[B*H, P, Q, *rest]``."""
    level_slice = tensor[:, :, :, level].to(dtype)  # [B, Q, H, P, *rest]
    return level_slice.permute(0, 2, 3, 1, *range(4, level_slice.dim())).flatten(0, 1)


def _check_num_tokens(value: torch.Tensor, shapes: list[tuple]) -> None:
    expected = sum(h * w for h, w in shapes)
    if value.shape[1] != expected:
        raise ValueError(
            f"value has {value.shape[1]} tokens but spatial_shapes {shapes} sum to {expected}; "
            "pass the (H_l, W_l) of every level in the order the value was flattened."
        )


def grid_sample_attention(
    value: torch.Tensor,
    shapes: Sequence[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Deformable attention as one ``grid_sample`` per level, computed in ``dtype`` (no autocast
    handling, no checks: the eager path and the exported graph's lowering both call it).

    Shapes: value ``[B, S, H, Dh]``, sampling_locations ``[B, Q, H, L, P, 2]`` (normalised x, y),
    attention_weights ``[B, Q, H, L, P]`` -> ``[B, Q, H * Dh]`` in value's dtype.
    """
    batch, _, heads, head_dim = value.shape
    num_queries = sampling_locations.shape[1]
    grids = sampling_locations.to(dtype) * 2 - 1
    output = None
    # points before queries: the weighting and the sum over points then run along rows of Q
    # values (a trailing axis of P = 4 is several times slower on CPU); the same sums
    for level, value_map in enumerate(_level_value_maps(value, shapes, dtype)):
        sampled = F.grid_sample(
            value_map,
            _per_level_points_first(grids, level, dtype),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )  # [B*H, Dh, P, Q]
        weights = _per_level_points_first(attention_weights, level, dtype).unsqueeze(1)
        contribution = (sampled * weights).sum(2)  # [B*H, Dh, Q]
        output = contribution if output is None else output + contribution
    output = output.view(batch, heads * head_dim, num_queries).transpose(1, 2)
    return output.to(value.dtype).contiguous()


def _pytorch_forward(value, shapes, sampling_locations, attention_weights) -> torch.Tensor:
    _check_num_tokens(value, shapes)
    dtype = _compute_dtype(value, sampling_locations, attention_weights)
    with torch.autocast(value.device.type, enabled=False):
        return grid_sample_attention(value, shapes, sampling_locations, attention_weights, dtype)


def _pytorch_backward(grad_output, value, shapes, sampling_locations, attention_weights):
    _check_num_tokens(value, shapes)
    batch, _, heads, head_dim = value.shape
    num_queries, num_levels, num_points = (
        sampling_locations.shape[1],
        *sampling_locations.shape[3:5],
    )
    dtype = _compute_dtype(grad_output, value, sampling_locations, attention_weights)
    grids = sampling_locations.to(dtype) * 2 - 1
    # [B, Q, H*Dh] -> [B*H, Dh, Q, 1]
    grad_out = grad_output.to(dtype).reshape(batch, num_queries, heads, head_dim)
    grad_out = grad_out.permute(0, 2, 3, 1).reshape(batch * heads, head_dim, num_queries, 1)
    grad_value_levels = []
    grad_loc = grids.new_empty(batch, heads, num_queries, num_levels, num_points, 2)
    grad_attn = grids.new_empty(batch, heads, num_queries, num_levels, num_points)
    with torch.autocast(value.device.type, enabled=False):
        for level, value_map in enumerate(_level_value_maps(value, shapes, dtype)):
            grid = _per_level(grids, level, dtype)  # [B*H, Q, P, 2]
            weights = _per_level(attention_weights, level, dtype).unsqueeze(1)
            sampled = F.grid_sample(
                value_map, grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
            grad_attn[:, :, :, level] = (
                (grad_out * sampled).sum(1).view(batch, heads, -1, num_points)
            )
            # interpolation_mode 0 = bilinear, padding_mode 0 = zeros.
            grad_map, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
                grad_out * weights, value_map, grid, 0, 0, False, [True, True]
            )
            height, width = value_map.shape[-2:]
            grad_map = grad_map.view(batch, heads, head_dim, height * width).permute(0, 3, 1, 2)
            grad_value_levels.append(grad_map)
            # grid = 2 * loc - 1, so d/dloc = 2 * d/dgrid.
            grad_loc[:, :, :, level] = 2 * grad_grid.view(batch, heads, num_queries, num_points, 2)
    grad_value = torch.cat(grad_value_levels, dim=1).to(value.dtype).contiguous()
    grad_loc = grad_loc.transpose(1, 2).to(sampling_locations.dtype)
    grad_attn = grad_attn.transpose(1, 2).to(attention_weights.dtype)
    return grad_value, grad_loc.contiguous(), grad_attn.contiguous()


def multi_scale_deformable_attn_pytorch(
    value: torch.Tensor,
    spatial_shapes: SpatialShapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Eager pure-PyTorch deformable attention (differentiable through ``grid_sample``).

    Same arguments and result as ``multi_scale_deformable_attn`` without the level start index;
    useful as a reference. Shapes: value ``[B, S, H, Dh]``, sampling_locations
    ``[B, Q, H, L, P, 2]``, attention_weights ``[B, Q, H, L, P]`` -> ``[B, Q, H*Dh]``.
    """
    shapes = [tuple(int(v) for v in hw) for hw in _as_int_pairs(spatial_shapes)]
    return _pytorch_forward(value, shapes, sampling_locations, attention_weights)


# ----------------------------------------------------------------------------------------------
# Custom op definitions
# ----------------------------------------------------------------------------------------------
@torch.library.custom_op("detrex_ext::ms_deform_attn", mutates_args=())
def _ms_deform_attn_op(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    shapes_hint: list[int] | None,
) -> torch.Tensor:
    path, triton = _resolve_backend(value)
    if path == "triton":
        output = triton.msda_forward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
        return output.contiguous()
    shapes = _level_shapes(spatial_shapes, shapes_hint)
    if path == "gather":
        _check_num_tokens(value, shapes)
        return msda_gather_forward(value, shapes, sampling_locations, attention_weights)
    return _pytorch_forward(value, shapes, sampling_locations, attention_weights)


@_ms_deform_attn_op.register_fake
def _ms_deform_attn_fake(value, spatial_shapes, level_start_index, loc, attn, shapes_hint):
    batch, _, heads, head_dim = value.shape
    return value.new_empty(batch, loc.shape[1], heads * head_dim)


@torch.library.custom_op("detrex_ext::ms_deform_attn_backward", mutates_args=())
def _ms_deform_attn_backward_op(
    grad_output: torch.Tensor,
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    shapes_hint: list[int] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    path, triton = _resolve_backend(value)
    if path == "triton":
        grads = triton.msda_backward(
            grad_output.contiguous(),
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
        )
        return tuple(grad.contiguous() for grad in grads)
    shapes = _level_shapes(spatial_shapes, shapes_hint)
    if path == "gather":
        _check_num_tokens(value, shapes)
        return msda_gather_backward(
            grad_output, value, shapes, sampling_locations, attention_weights
        )
    return _pytorch_backward(grad_output, value, shapes, sampling_locations, attention_weights)


@_ms_deform_attn_backward_op.register_fake
def _ms_deform_attn_backward_fake(grad_output, value, spatial_shapes, level_start, loc, attn, hint):
    return torch.empty_like(value), torch.empty_like(loc), torch.empty_like(attn)


def _setup_context(ctx, inputs, output) -> None:
    value, spatial_shapes, level_start_index, loc, attn, shapes_hint = inputs
    ctx.save_for_backward(value, spatial_shapes, level_start_index, loc, attn)
    ctx.shapes_hint = shapes_hint


def _backward(ctx, grad_output):
    value, spatial_shapes, level_start_index, loc, attn = ctx.saved_tensors
    grad_value, grad_loc, grad_attn = _ms_deform_attn_backward_op(
        grad_output.contiguous(),
        value,
        spatial_shapes,
        level_start_index,
        loc,
        attn,
        ctx.shapes_hint,
    )
    return grad_value, None, None, grad_loc, grad_attn, None


_ms_deform_attn_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------
def _as_int_pairs(spatial_shapes: SpatialShapes) -> list:
    if isinstance(spatial_shapes, torch.Tensor):
        return spatial_shapes.tolist()
    return [tuple(hw) for hw in spatial_shapes]


def _check_shapes(value, sampling_locations, attention_weights, num_levels: int) -> None:
    if value.dim() != 4:
        raise ValueError(f"value must be [B, S, num_heads, head_dim], got {tuple(value.shape)}")
    batch, _, heads, _ = value.shape
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            "sampling_locations must be [B, Q, num_heads, num_levels, num_points, 2], got "
            f"{tuple(sampling_locations.shape)}"
        )
    b, q, h, levels, points, _ = sampling_locations.shape
    if (b, h, levels) != (batch, heads, num_levels):
        raise ValueError(
            f"sampling_locations {tuple(sampling_locations.shape)} does not match value "
            f"{tuple(value.shape)} and {num_levels} levels (batch, heads and levels must agree)"
        )
    if tuple(attention_weights.shape) != (b, q, h, levels, points):
        raise ValueError(
            f"attention_weights must be {(b, q, h, levels, points)} "
            f"(= sampling_locations without the last axis), got {tuple(attention_weights.shape)}"
        )


def multi_scale_deformable_attn(
    value: torch.Tensor,
    spatial_shapes: SpatialShapes,
    level_start_index: torch.Tensor | Sequence[int] | None,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention (the ``MSDeformAttnFunction`` of Deformable DETR).

    Args:
        value: ``[B, S, H, Dh]``, the per-head values of all levels flattened row-major and
            concatenated, ``S = sum_l H_l * W_l``. fp32, fp64, bf16 or fp16.
        spatial_shapes: ``[L, 2]`` int64 tensor or a sequence of ``(H_l, W_l)`` Python ints.
            Ints avoid a device-to-host copy in the PyTorch path and compile to constants.
        level_start_index: ``[L]`` offsets of each level in ``S`` (int64 tensor or ints), or
            ``None`` to derive them from ``spatial_shapes``. Levels must be contiguous.
        sampling_locations: ``[B, Q, H, L, P, 2]`` normalised (x, y); (0, 0) is the top-left
            corner of the map and (1, 1) the bottom-right one (align_corners=False convention:
            pixel = loc * size - 0.5). Points outside read zeros.
        attention_weights: ``[B, Q, H, L, P]`` weights of each sample (usually a softmax over L*P).

    Returns:
        ``[B, Q, H*Dh]`` in ``value.dtype`` (heads concatenated along the channel axis).
    """
    if isinstance(spatial_shapes, torch.Tensor):
        shapes_tensor = spatial_shapes.to(device=value.device, dtype=torch.long)
        shapes_hint = None
        num_levels = shapes_tensor.shape[0]
    else:
        pairs = [tuple(hw) for hw in spatial_shapes]
        shapes_hint = [side for hw in pairs for side in hw]
        shapes_tensor = torch.tensor(pairs, dtype=torch.long, device=value.device).view(-1, 2)
        num_levels = len(pairs)
    _check_shapes(value, sampling_locations, attention_weights, num_levels)
    if level_start_index is None:
        sizes = shapes_tensor.prod(1)
        level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    elif not isinstance(level_start_index, torch.Tensor):
        level_start_index = torch.tensor(list(level_start_index), dtype=torch.long)
    level_start_index = level_start_index.to(device=value.device, dtype=torch.long)
    return _ms_deform_attn_op(
        value.contiguous(),
        shapes_tensor,
        level_start_index,
        sampling_locations.contiguous(),
        attention_weights.contiguous(),
        shapes_hint,
    )
