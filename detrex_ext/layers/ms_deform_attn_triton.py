"""Triton backend of multi-scale deformable attention: forward and backward kernels.

The pure functions here implement the TRITON <-> BLOCKS contract (see
``detrex_ext.layers.multi_scale_deformable_attn``, which wraps them in a custom op with autograd):

* ``is_available()`` - Triton imports and can run here (a CUDA/ROCm device, or the interpreter);
* ``msda_forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)``;
* ``msda_backward(grad_output, value, spatial_shapes, level_start_index, sampling_locations,
  attention_weights)``.

Semantics are those of the official CUDA op, i.e. ``grid_sample(align_corners=False,
padding_mode="zeros")``: a normalised location ``loc`` in level ``l`` is sampled at pixel
``loc * size - 0.5``, bilinearly, and corners outside the map contribute zero. Gradients with respect
to the location are those of the floor-based bilinear formula (as ``grid_sample``; at integer pixel
coordinates this is the derivative from the right).

Precision: ``value`` (and ``grad_output``) may be fp32, bf16, fp16 or fp64; coordinates, bilinear
weights and all accumulations are fp32 (fp64 for fp64 values). The value gradient is accumulated in
an fp32 buffer with relaxed atomics (non-deterministic in the last bits, like the official op) and
cast to ``value.dtype`` at the end. Location/weight gradients are reduced in registers, no atomics.

No host synchronisation: level shapes and start offsets are read by the kernels from the device
tensors, so they are not checked against ``value`` on the host; a level that does not fit inside
``value`` (inconsistent shapes) samples zeros instead of reading out of bounds. The first call for
a new problem-size bucket autotunes the launch configuration (it compiles and runs the candidates
and synchronises; the chosen one is logged at DEBUG level), so warm up before capturing a CUDA
graph.

Set ``TRITON_INTERPRET=1`` before this module's kernels are first used to run them on CPU tensors
through Triton's interpreter (slow; for tests).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import NamedTuple

import torch

__all__ = ["KernelConfig", "is_available", "msda_backward", "msda_forward"]

logger = logging.getLogger(__name__)

_VALUE_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
_MAX_HEAD_DIM = 1024
_INT32_LIMIT = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """A fixed launch configuration (instead of autotuning), for tests and benchmarks.

    block_q: queries per program (power of two); num_warps: warps per program; unroll_points:
    unroll the loop over sampling points (more loads in flight, more registers).
    """

    block_q: int = 16
    num_warps: int = 4
    unroll_points: bool = False


class _Dims(NamedTuple):
    batch: int
    num_tokens: int
    num_heads: int
    head_dim: int
    num_queries: int
    num_levels: int
    num_points: int


# Used where autotuning cannot run (Triton's interpreter) unless a call passes a config.
DEFAULT_CONFIG = KernelConfig()


def _interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=None)
def _kernels() -> ModuleType:
    try:
        from detrex_ext.layers import _ms_deform_attn_triton_kernels as kernels
    except ImportError as exc:  # triton missing or broken
        raise ImportError(
            "The Triton deformable-attention backend needs the `triton` package, which ships with "
            "the CUDA builds of PyTorch (`pip install triton`). Use the PyTorch backend instead: "
            "DETREX_MSDA_BACKEND=pytorch."
        ) from exc
    return kernels


def is_available() -> bool:
    """True when Triton imports and has something to run on (a GPU, or the interpreter)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    if _interpreter_enabled():
        return True
    if not torch.cuda.is_available():
        return False
    if torch.version.hip is not None:
        return True
    return torch.cuda.get_device_capability() >= (7, 0)


def _as_index_tensor(x: torch.Tensor | Sequence, name: str, device: torch.device) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):  # list of (h, w) / starts: one small host-to-device copy
        x = torch.as_tensor(x, dtype=torch.int64)
    if x.dtype != torch.int64:
        x = x.long()
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but value is on {device}; move it to {device}.")
    return x.contiguous()


def _check_inputs(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> _Dims:
    """Validates shapes/dtypes/devices (metadata only, no sync)."""
    if value.dim() != 4:
        raise ValueError(f"value must be [B, S, H, Dh], got shape {tuple(value.shape)}.")
    if value.dtype not in _VALUE_DTYPES:
        raise TypeError(f"value must be float32/bfloat16/float16/float64, got {value.dtype}.")
    batch, num_tokens, num_heads, head_dim = value.shape
    if head_dim > _MAX_HEAD_DIM:
        raise ValueError(
            f"head dim {head_dim} is above the Triton backend's limit of {_MAX_HEAD_DIM}; "
            "use the PyTorch backend (DETREX_MSDA_BACKEND=pytorch)."
        )
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            "sampling_locations must be [B, Q, H, L, P, 2], got shape "
            f"{tuple(sampling_locations.shape)}."
        )
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    expected = (batch, num_queries, num_heads, num_levels, num_points)
    if tuple(sampling_locations.shape[:5]) != expected:
        raise ValueError(
            f"sampling_locations has shape {tuple(sampling_locations.shape)} but value "
            f"{tuple(value.shape)} needs [B={batch}, Q, H={num_heads}, L, P, 2]."
        )
    if tuple(attention_weights.shape) != expected:
        raise ValueError(
            f"attention_weights must be [B, Q, H, L, P] = {list(expected)} to match "
            f"sampling_locations, got {tuple(attention_weights.shape)}."
        )
    if tuple(spatial_shapes.shape) != (num_levels, 2):
        raise ValueError(
            f"spatial_shapes must be [L={num_levels}, 2] (height, width per level), got "
            f"{tuple(spatial_shapes.shape)}."
        )
    if tuple(level_start_index.shape) != (num_levels,):
        raise ValueError(
            f"level_start_index must be [L={num_levels}], got {tuple(level_start_index.shape)}."
        )
    for name, tensor in (
        ("sampling_locations", sampling_locations),
        ("attention_weights", attention_weights),
    ):
        if not tensor.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {tensor.dtype}.")
        if tensor.device != value.device:
            raise ValueError(f"{name} is on {tensor.device} but value is on {value.device}.")
    if value.device.type != "cuda" and not _interpreter_enabled():
        raise RuntimeError(
            f"the Triton deformable-attention kernels need CUDA tensors, got {value.device} "
            "(set TRITON_INTERPRET=1 to run them on CPU through Triton's interpreter, slowly)."
        )
    return _Dims(batch, num_tokens, num_heads, head_dim, num_queries, num_levels, num_points)


def _prepare(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor | Sequence,
    level_start_index: torch.Tensor | Sequence,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, _Dims]:
    """int64 contiguous index tensors on value's device, and the validated problem sizes."""
    spatial_shapes = _as_index_tensor(spatial_shapes, "spatial_shapes", value.device)
    level_start_index = _as_index_tensor(level_start_index, "level_start_index", value.device)
    dims = _check_inputs(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    return spatial_shapes, level_start_index, dims


def _launch_args(value: torch.Tensor, dims: _Dims) -> tuple[dict, int]:
    """Meta-parameters shared by both kernels, and the autotuning bucket of the problem size."""
    import triton
    import triton.language as tl

    samples = 2 * dims.num_levels * dims.num_points
    per_batch = max(  # largest element offset inside one batch element
        dims.num_tokens * dims.num_heads * dims.head_dim,
        dims.num_queries * dims.num_heads * max(dims.head_dim, samples),
    )
    meta = dict(
        HEAD_DIM=dims.head_dim,
        BLOCK_D=triton.next_power_of_2(dims.head_dim),
        NUM_LEVELS=dims.num_levels,
        NUM_POINTS=dims.num_points,
        COMPUTE=tl.float64 if value.dtype == torch.float64 else tl.float32,
        WIDE_INDEX=per_batch > _INT32_LIMIT,
        BLOCK_LP=triton.next_power_of_2(dims.num_levels * dims.num_points),
    )
    work_bucket = triton.next_power_of_2(dims.batch * dims.num_queries * dims.num_heads)
    return meta, work_bucket


def _launch(
    kind: str, tensors: list, value: torch.Tensor, dims: _Dims, config: KernelConfig | None
) -> None:
    """Runs the ``kind`` ("forward" / "backward") kernel: autotuned on GPUs; a fixed config in
    the interpreter (which cannot benchmark) or when the caller gives one."""
    kernels = _kernels()
    meta, work_bucket = _launch_args(value, dims)
    if config is None and not _interpreter_enabled():
        kernel, tile = getattr(kernels, f"msda_{kind}_kernel_tuned"), {}
    else:
        config = config or DEFAULT_CONFIG
        kernel = getattr(kernels, f"msda_{kind}_kernel")
        tile = {
            "BLOCK_Q": config.block_q,
            "UNROLL_POINTS": config.unroll_points,
            "num_warps": config.num_warps,
            "num_stages": 1,
        }

    def grid(launch_meta: dict) -> tuple[int, int]:
        query_tiles = (dims.num_queries + launch_meta["BLOCK_Q"] - 1) // launch_meta["BLOCK_Q"]
        return (query_tiles * dims.num_heads, dims.batch)

    sizes = (dims.num_queries, dims.num_tokens, dims.num_heads, work_bucket)
    kernel[grid](*tensors, *sizes, **meta, **tile)
    if not tile:
        _log_tuned_config(kind, kernel, value.dtype, work_bucket, meta)


_logged_configs: set[tuple] = set()


def _log_tuned_config(kind: str, kernel, dtype: torch.dtype, work_bucket: int, meta: dict) -> None:
    key = (kind, dtype, work_bucket, *meta.values())
    if key in _logged_configs or not logger.isEnabledFor(logging.DEBUG):
        return
    _logged_configs.add(key)
    best = kernel.best_config
    logger.debug(
        "Triton MSDA %s, value %s, ~%d query-heads, Dh=%d, L=%d, P=%d: BLOCK_Q=%d, %d warps, %s",
        kind,
        dtype,
        work_bucket,
        meta["HEAD_DIM"],
        meta["NUM_LEVELS"],
        meta["NUM_POINTS"],
        best.kwargs["BLOCK_Q"],
        best.num_warps,
        "points unrolled" if best.kwargs["UNROLL_POINTS"] else "points looped",
    )


def _alert_not_deterministic() -> None:
    """Honour ``torch.use_deterministic_algorithms`` like PyTorch's own atomic-add backwards."""
    if not torch.are_deterministic_algorithms_enabled():
        return
    message = (
        "msda_backward (Triton) adds the value gradient with atomics, so it is not deterministic "
        "(nor is grid_sample's CUDA backward). Use torch.use_deterministic_algorithms(True, "
        "warn_only=True) to allow it, or run on CPU for bit-exact gradients."
    )
    if torch.is_deterministic_algorithms_warn_only_enabled():
        warnings.warn(message, stacklevel=3)
    else:
        raise RuntimeError(message)


def msda_forward(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    *,
    config: KernelConfig | None = None,
) -> torch.Tensor:
    """Multi-scale deformable attention, forward.

    Args:
        value: [B, S, H, Dh], S = sum of H_l * W_l over levels (fp32/bf16/fp16/fp64).
        spatial_shapes: [L, 2] int64 (height, width) of each level, on value's device.
        level_start_index: [L] int64 offset of each level in S.
        sampling_locations: [B, Q, H, L, P, 2] normalised (x, y) in [0, 1] (any float dtype).
        attention_weights: [B, Q, H, L, P] (any float dtype).
        config: a fixed launch configuration instead of autotuning (tests, benchmarks).

    Returns:
        [B, Q, H * Dh] in value's dtype.
    """
    spatial_shapes, level_start_index, dims = _prepare(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    out_shape = (dims.batch, dims.num_queries, dims.num_heads * dims.head_dim)
    if min(dims) == 0:
        return value.new_zeros(out_shape)
    output = value.new_empty(out_shape)
    inputs = [value, spatial_shapes, level_start_index, sampling_locations, attention_weights]
    _launch("forward", [t.contiguous() for t in inputs] + [output], value, dims, config)
    return output


def msda_backward(
    grad_output: torch.Tensor,
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    *,
    config: KernelConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Multi-scale deformable attention, backward (arguments as ``msda_forward``).

    Args:
        grad_output: [B, Q, H * Dh], gradient of the forward output (any float dtype).

    Returns:
        (grad_value [B, S, H, Dh] in value's dtype, grad_sampling_locations [B, Q, H, L, P, 2] and
        grad_attention_weights [B, Q, H, L, P] in the dtypes of those inputs).
    """
    spatial_shapes, level_start_index, dims = _prepare(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    expected = (dims.batch, dims.num_queries, dims.num_heads * dims.head_dim)
    if tuple(grad_output.shape) != expected:
        raise ValueError(
            f"grad_output must be [B, Q, H*Dh] = {list(expected)}, got {tuple(grad_output.shape)}."
        )
    _alert_not_deterministic()
    if min(dims) == 0:
        return (
            torch.zeros_like(value),
            torch.zeros_like(sampling_locations),
            torch.zeros_like(attention_weights),
        )
    accum_dtype = torch.float64 if value.dtype == torch.float64 else torch.float32
    grad_value = torch.zeros(value.shape, dtype=accum_dtype, device=value.device)
    # every (query, head, level, point) entry of these is written by the kernel
    grad_loc = torch.empty_like(sampling_locations, memory_format=torch.contiguous_format)
    grad_attn = torch.empty_like(attention_weights, memory_format=torch.contiguous_format)
    inputs = [grad_output, value, spatial_shapes, level_start_index, sampling_locations]
    inputs.append(attention_weights)
    outputs = [grad_value, grad_loc, grad_attn]
    _launch("backward", [t.contiguous() for t in inputs] + outputs, value, dims, config)
    return grad_value.to(value.dtype), grad_loc, grad_attn
