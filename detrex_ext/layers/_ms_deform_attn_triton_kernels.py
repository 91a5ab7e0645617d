"""Triton kernels of multi-scale deformable attention (private; use ``ms_deform_attn_triton``).

Importing this module imports Triton, and ``@triton.jit`` reads ``TRITON_INTERPRET`` when the
kernels are decorated, i.e. when this module is first imported.

Work mapping (forward and backward): one program = (a tile of ``BLOCK_Q`` queries, one head, one
batch element) holding a ``[BLOCK_Q, BLOCK_D]`` register tile. The head is the fastest-varying
program index, so programs that run together share queries: their sampling locations and weights
sit on the same cache lines, and the heads of one query sample the same neighbourhood of ``value``
(one ``[H, Dh]`` row per pixel), which keeps the corner gathers in L2. Levels x points x corners are
unrolled at compile time; each point's pixel coordinates and bilinear weights are computed once per
query (a ``[BLOCK_Q]`` vector) and broadcast over the head dimension. The op is bound by the number
of scattered row reads, not bytes, so all four corner loads of a point are issued before use.

Coordinates and weights are always computed in the accumulation dtype (fp32, or fp64 for fp64
inputs); values may be fp16/bf16 and are up-cast on load. Level shapes and start offsets are read on
the device from ``spatial_shapes`` / ``level_start_index``: the host never synchronises.
"""

from __future__ import annotations

import triton
import triton.language as tl

# Autotuning space: BLOCK_Q queries x num_warps x (points in a runtime loop | fully unrolled).
# Unrolling levels x points x corners lets the compiler issue all corner loads of a tile at once
# (most memory-level parallelism; ~255 registers/thread at 4 fp32 elements per thread and load,
# so fewer resident warps); the loop keeps levels x corners unrolled (16 loads in flight at
# 4 levels) with ~40-110 registers and far higher occupancy. Which wins is GPU-dependent, hence
# both are tuned. The notes' H200 probe (fully unrolled) found BLOCK_Q 16-32 x 4 warps best.
_BLOCK_Q = (4, 8, 16, 32, 64)
_NUM_WARPS = (2, 4, 8)


def _all_configs() -> list[triton.Config]:
    return [
        triton.Config({"BLOCK_Q": bq, "UNROLL_POINTS": unroll}, num_warps=warps, num_stages=1)
        for unroll in (False, True)
        for bq in _BLOCK_Q
        for warps in _NUM_WARPS
    ]


def _elements_per_thread(block_q: int, block_d: int, num_warps: int) -> float:
    """Elements of one [BLOCK_Q, BLOCK_D] corner load held by each thread."""
    return block_q * block_d / (32 * num_warps)


def _keep_config(config: triton.Config, block_d: int, half_value_backward: bool) -> bool:
    """The tuning space for one head dim: 4-8 elements (16-32 bytes of fp32) per thread and load,
    at least 16 queries unless the head is wide. Unrolled: only the probe's best tile (16 queries,
    4 elements per thread), as it compiles slowly (tens of seconds for the backward). The backward
    of 16-bit values keeps 4 elements: with 8, the 16-byte half loads and the fp32 atomics get
    different register layouts, converted through shared memory at every point (sm_90 PTX)."""
    block_q = config.kwargs["BLOCK_Q"]
    per_thread = _elements_per_thread(block_q, block_d, config.num_warps)
    if config.kwargs["UNROLL_POINTS"]:
        return block_q == 16 and per_thread == 4
    allowed = (4,) if half_value_backward else (4, 8)
    return per_thread in allowed and (block_q >= 16 or block_d > 64)


def _pruner(backward: bool):
    def prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
        block_d = kwargs.get("BLOCK_D", named_args.get("BLOCK_D"))
        value = named_args.get("value_ptr")
        half = backward and value is not None and value.element_size() == 2
        kept = [c for c in configs if _keep_config(c, block_d, half)]
        if not kept:  # tiny or huge heads: the configs closest to 4 elements per thread

            def distance(c: triton.Config) -> float:
                return abs(_elements_per_thread(c.kwargs["BLOCK_Q"], block_d, c.num_warps) - 4)

            best = min(distance(c) for c in configs)
            kept = [c for c in configs if distance(c) == best and not c.kwargs["UNROLL_POINTS"]]
        return kept

    return prune


# The autotuner adds the dtype of every tensor argument to this key by itself.
_TUNING_KEY = ["work_bucket", "HEAD_DIM", "NUM_LEVELS", "NUM_POINTS"]


@triton.jit
def _point_geometry(loc_ptr, attn_ptr, sample_offs, q_mask, k, height_f, width_f, COMPUTE):
    """Pixel corner coordinates and bilinear weights of sampling point ``k`` of each query.

    Returns the attention weight, the fractional offsets (fx, fy), the integer top-left corner
    (x0, y0) and the four in-bounds masks of the corners (top-left, top-right, bottom-left,
    bottom-right). Bounds are tested on the floored floats, so far-away points never overflow int32.
    """
    xy_ptrs = loc_ptr + 2 * (sample_offs + k)[:, None] + tl.arange(0, 2)[None, :]
    loc_xy = tl.load(xy_ptrs, mask=q_mask[:, None], other=0.0).to(COMPUTE)
    loc_x, loc_y = tl.split(loc_xy)
    attn = tl.load(attn_ptr + sample_offs + k, mask=q_mask, other=0.0).to(COMPUTE)
    # align_corners=False: pixel centre i sits at normalised (i + 0.5) / size
    x = loc_x * width_f - 0.5
    y = loc_y * height_f - 0.5
    x0f = tl.floor(x)
    y0f = tl.floor(y)
    fx = x - x0f
    fy = y - y0f
    x0_in = (x0f >= 0.0) & (x0f < width_f)
    x1_in = (x0f >= -1.0) & (x0f < width_f - 1.0)
    y0_in = (y0f >= 0.0) & (y0f < height_f) & q_mask
    y1_in = (y0f >= -1.0) & (y0f < height_f - 1.0) & q_mask
    x0 = tl.where(x0_in | x1_in, x0f, 0.0).to(tl.int32)
    y0 = tl.where(y0_in | y1_in, y0f, 0.0).to(tl.int32)
    return attn, fx, fy, x0, y0, y0_in & x0_in, y0_in & x1_in, y1_in & x0_in, y1_in & x1_in


@triton.jit
def _query_head_rows(offs_q, head, num_heads, WIDE_INDEX: tl.constexpr):
    """Row index (query * H + head) of each query inside one batch element."""
    if WIDE_INDEX:
        offs_q = offs_q.to(tl.int64)
    return offs_q * num_heads + head


@triton.jit
def _row_offsets(level_start, y0, x0, width, row_stride, WIDE_INDEX: tl.constexpr):
    """Element offsets (within one batch element and head) of the four corner rows."""
    top_left = level_start + y0 * width + x0
    if WIDE_INDEX:
        top_left = top_left.to(tl.int64)
    off00 = top_left * row_stride
    off01 = off00 + row_stride
    off10 = off00 + width * row_stride
    off11 = off10 + row_stride
    return off00, off01, off10, off11


@triton.jit
def _load_rows(base_ptr, offs, row_mask, offs_d, d_mask, COMPUTE, EVEN_D: tl.constexpr):
    ptrs = base_ptr + offs[:, None] + offs_d[None, :]
    if EVEN_D:
        mask = row_mask[:, None]
    else:
        mask = row_mask[:, None] & d_mask[None, :]
    return tl.load(ptrs, mask=mask, other=0.0).to(COMPUTE)


@triton.jit
def _level_shape(shapes_ptr, level_start_ptr, lvl, num_tokens, COMPUTE):
    """Height, width and first token of a level. A level that does not lie inside ``value``
    (inconsistent shapes; checking on the host would sync) gets height 0, so it samples zeros
    instead of reading out of bounds."""
    height = tl.load(shapes_ptr + 2 * lvl)
    width = tl.load(shapes_ptr + 2 * lvl + 1)
    level_start = tl.load(level_start_ptr + lvl)
    level_ok = (level_start >= 0) & (level_start + height * width <= num_tokens)
    height = tl.where(level_ok, height, 0).to(tl.int32)
    width = width.to(tl.int32)
    return height, width, level_start.to(tl.int32), height.to(COMPUTE), width.to(COMPUTE)


@triton.jit
def _sample_point(
    loc_ptr, attn_ptr, sample_offs, q_mask, k, level_start, width, height_f, width_f, value_base,
    row_stride, offs_d, d_mask, COMPUTE, EVEN_D: tl.constexpr, WIDE_INDEX: tl.constexpr,
):  # fmt: skip
    """Sampling point ``k`` of every query in the tile: its attention weight, bilinear fractions,
    the offsets and in-bounds masks of its four corner rows and the rows themselves (in COMPUTE);
    all four loads are issued together."""
    attn, fx, fy, x0, y0, in00, in01, in10, in11 = _point_geometry(
        loc_ptr, attn_ptr, sample_offs, q_mask, k, height_f, width_f, COMPUTE
    )
    off00, off01, off10, off11 = _row_offsets(level_start, y0, x0, width, row_stride, WIDE_INDEX)
    v00 = _load_rows(value_base, off00, in00, offs_d, d_mask, COMPUTE, EVEN_D)
    v01 = _load_rows(value_base, off01, in01, offs_d, d_mask, COMPUTE, EVEN_D)
    v10 = _load_rows(value_base, off10, in10, offs_d, d_mask, COMPUTE, EVEN_D)
    v11 = _load_rows(value_base, off11, in11, offs_d, d_mask, COMPUTE, EVEN_D)
    return attn, fx, fy, off00, off01, off10, off11, in00, in01, in10, in11, v00, v01, v10, v11


@triton.jit
def _tile(
    num_queries,
    num_heads,
    HEAD_DIM,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
    WIDE_INDEX: tl.constexpr,
):
    """This program's batch element, head, queries (+mask), channels (+mask), the rows
    (query * H + head) of its queries inside the batch element and the batch's first row."""
    pid = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    head = pid % num_heads
    offs_q = (pid // num_heads) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_mask = offs_q < num_queries
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    qh = _query_head_rows(offs_q, head, num_heads, WIDE_INDEX)
    return batch, head, q_mask, offs_d, d_mask, qh, batch * num_queries * num_heads


@triton.jit
def _msda_forward_kernel(
    value_ptr,  # [B, S, H, Dh]
    shapes_ptr,  # [L, 2] int64 (height, width)
    level_start_ptr,  # [L] int64
    loc_ptr,  # [B, Q, H, L, P, 2]
    attn_ptr,  # [B, Q, H, L, P]
    out_ptr,  # [B, Q, H * Dh]
    num_queries,
    num_tokens,
    num_heads,
    work_bucket,  # autotuning key only: next power of two of B * Q * H
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    NUM_LEVELS: tl.constexpr,
    NUM_POINTS: tl.constexpr,
    COMPUTE: tl.constexpr,
    WIDE_INDEX: tl.constexpr,
    BLOCK_LP: tl.constexpr,  # unused here; shared meta-parameters with the backward
    BLOCK_Q: tl.constexpr,
    UNROLL_POINTS: tl.constexpr,
):
    batch, head, q_mask, offs_d, d_mask, qh, batch_rows = _tile(
        num_queries, num_heads, HEAD_DIM, BLOCK_Q, BLOCK_D, WIDE_INDEX
    )
    EVEN_D: tl.constexpr = BLOCK_D == HEAD_DIM
    row_stride = num_heads * HEAD_DIM
    # per-batch base pointers (64-bit scalars) + 32-bit vector offsets within the batch element
    value_base = value_ptr + batch * num_tokens * row_stride + head * HEAD_DIM
    loc_ptr += batch_rows * (2 * NUM_LEVELS * NUM_POINTS)
    attn_ptr += batch_rows * (NUM_LEVELS * NUM_POINTS)
    sample_offs = qh * (NUM_LEVELS * NUM_POINTS)

    acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=COMPUTE)
    for lvl in tl.static_range(NUM_LEVELS):
        height, width, level_start, height_f, width_f = _level_shape(
            shapes_ptr, level_start_ptr, lvl, num_tokens, COMPUTE
        )
        for pt in tl.range(NUM_POINTS, loop_unroll_factor=NUM_POINTS if UNROLL_POINTS else 1):
            k = lvl * NUM_POINTS + pt
            attn, fx, fy, off00, off01, off10, off11, in00, in01, in10, in11, v00, v01, v10, v11 = (
                _sample_point(
                    loc_ptr, attn_ptr, sample_offs, q_mask, k, level_start, width, height_f,
                    width_f, value_base, row_stride, offs_d, d_mask, COMPUTE, EVEN_D, WIDE_INDEX,
                )
            )  # fmt: skip
            w_top = attn * (1.0 - fy)
            w_bottom = attn * fy
            acc += (w_top * (1.0 - fx))[:, None] * v00
            acc += (w_top * fx)[:, None] * v01
            acc += (w_bottom * (1.0 - fx))[:, None] * v10
            acc += (w_bottom * fx)[:, None] * v11

    out_ptrs = out_ptr + batch_rows * HEAD_DIM + qh[:, None] * HEAD_DIM + offs_d[None, :]
    out_mask = q_mask[:, None] & d_mask[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _msda_backward_kernel(
    grad_out_ptr,  # [B, Q, H * Dh]
    value_ptr,  # [B, S, H, Dh]
    shapes_ptr,  # [L, 2] int64
    level_start_ptr,  # [L] int64
    loc_ptr,  # [B, Q, H, L, P, 2]
    attn_ptr,  # [B, Q, H, L, P]
    grad_value_ptr,  # [B, S, H, Dh] in the accumulation dtype, zero-initialised
    grad_loc_ptr,  # [B, Q, H, L, P, 2]
    grad_attn_ptr,  # [B, Q, H, L, P]
    num_queries,
    num_tokens,
    num_heads,
    work_bucket,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    NUM_LEVELS: tl.constexpr,
    NUM_POINTS: tl.constexpr,
    COMPUTE: tl.constexpr,
    WIDE_INDEX: tl.constexpr,
    BLOCK_LP: tl.constexpr,  # next power of two of L * P
    BLOCK_Q: tl.constexpr,
    UNROLL_POINTS: tl.constexpr,
):
    batch, head, q_mask, offs_d, d_mask, qh, batch_rows = _tile(
        num_queries, num_heads, HEAD_DIM, BLOCK_Q, BLOCK_D, WIDE_INDEX
    )
    EVEN_D: tl.constexpr = BLOCK_D == HEAD_DIM
    row_stride = num_heads * HEAD_DIM
    batch_offset = batch * num_tokens * row_stride + head * HEAD_DIM
    value_base = value_ptr + batch_offset
    grad_value_base = grad_value_ptr + batch_offset
    loc_ptr += batch_rows * (2 * NUM_LEVELS * NUM_POINTS)
    grad_loc_ptr += batch_rows * (2 * NUM_LEVELS * NUM_POINTS)
    attn_ptr += batch_rows * (NUM_LEVELS * NUM_POINTS)
    grad_attn_ptr += batch_rows * (NUM_LEVELS * NUM_POINTS)
    sample_offs = qh * (NUM_LEVELS * NUM_POINTS)

    grad_out = tl.load(
        grad_out_ptr + batch_rows * HEAD_DIM + qh[:, None] * HEAD_DIM + offs_d[None, :],
        mask=q_mask[:, None] & d_mask[None, :],
        other=0.0,
    ).to(COMPUTE)

    offs_lp = tl.arange(0, BLOCK_LP)
    grad_attn_tile = tl.zeros((BLOCK_Q, BLOCK_LP), dtype=COMPUTE)
    grad_x_tile = tl.zeros((BLOCK_Q, BLOCK_LP), dtype=COMPUTE)
    grad_y_tile = tl.zeros((BLOCK_Q, BLOCK_LP), dtype=COMPUTE)
    for lvl in tl.static_range(NUM_LEVELS):
        height, width, level_start, height_f, width_f = _level_shape(
            shapes_ptr, level_start_ptr, lvl, num_tokens, COMPUTE
        )
        for pt in tl.range(NUM_POINTS, loop_unroll_factor=NUM_POINTS if UNROLL_POINTS else 1):
            k = lvl * NUM_POINTS + pt
            attn, fx, fy, off00, off01, off10, off11, in00, in01, in10, in11, v00, v01, v10, v11 = (
                _sample_point(
                    loc_ptr, attn_ptr, sample_offs, q_mask, k, level_start, width, height_f,
                    width_f, value_base, row_stride, offs_d, d_mask, COMPUTE, EVEN_D, WIDE_INDEX,
                )
            )  # fmt: skip
            # <grad_out, corner row> per query: reduced over the head dim in registers
            s00 = tl.sum(grad_out * v00, axis=1)
            s01 = tl.sum(grad_out * v01, axis=1)
            s10 = tl.sum(grad_out * v10, axis=1)
            s11 = tl.sum(grad_out * v11, axis=1)
            gx = 1.0 - fx
            gy = 1.0 - fy
            grad_attn = gy * (gx * s00 + fx * s01) + fy * (gx * s10 + fx * s11)
            # d(pixel)/d(loc) = size: the map is sampled at loc * size - 0.5
            grad_x = attn * (gy * (s01 - s00) + fy * (s11 - s10)) * width_f
            grad_y = attn * (gx * (s10 - s00) + fx * (s11 - s01)) * height_f
            # collect per-point results in [BLOCK_Q, L*P] tiles, stored once, coalesced, at the
            # end (a [BLOCK_Q] store per point costs a shared-memory layout conversion each)
            column = offs_lp[None, :] == k
            grad_attn_tile = tl.where(column, grad_attn[:, None], grad_attn_tile)
            grad_x_tile = tl.where(column, grad_x[:, None], grad_x_tile)
            grad_y_tile = tl.where(column, grad_y[:, None], grad_y_tile)

            weighted = attn[:, None] * grad_out
            base = grad_value_base
            _scatter_rows(base, off00, in00, (gy * gx)[:, None] * weighted, offs_d, d_mask, EVEN_D)
            _scatter_rows(base, off01, in01, (gy * fx)[:, None] * weighted, offs_d, d_mask, EVEN_D)
            _scatter_rows(base, off10, in10, (fy * gx)[:, None] * weighted, offs_d, d_mask, EVEN_D)
            _scatter_rows(base, off11, in11, (fy * fx)[:, None] * weighted, offs_d, d_mask, EVEN_D)

    lp_mask = q_mask[:, None] & (offs_lp[None, :] < NUM_LEVELS * NUM_POINTS)
    attn_dtype = grad_attn_ptr.dtype.element_ty
    attn_ptrs = grad_attn_ptr + sample_offs[:, None] + offs_lp[None, :]
    tl.store(attn_ptrs, grad_attn_tile.to(attn_dtype), mask=lp_mask)
    # interleave (x, y) -> [BLOCK_Q, 2 * BLOCK_LP], the memory order of sampling_locations
    grad_loc_tile = tl.reshape(tl.join(grad_x_tile, grad_y_tile), (BLOCK_Q, 2 * BLOCK_LP))
    offs_2lp = tl.arange(0, 2 * BLOCK_LP)
    loc_mask = q_mask[:, None] & (offs_2lp[None, :] < 2 * NUM_LEVELS * NUM_POINTS)
    loc_ptrs = grad_loc_ptr + 2 * sample_offs[:, None] + offs_2lp[None, :]
    tl.store(loc_ptrs, grad_loc_tile.to(grad_loc_ptr.dtype.element_ty), mask=loc_mask)


@triton.jit
def _scatter_rows(base_ptr, offs, row_mask, rows, offs_d, d_mask, EVEN_D: tl.constexpr):
    """Adds ``rows`` [BLOCK_Q, BLOCK_D] into the value gradient; relaxed order is ~2x faster."""
    ptrs = base_ptr + offs[:, None] + offs_d[None, :]
    if EVEN_D:
        mask = row_mask[:, None]
    else:
        mask = row_mask[:, None] & d_mask[None, :]
    tl.atomic_add(ptrs, rows, mask=mask, sem="relaxed")


msda_forward_kernel = _msda_forward_kernel
msda_backward_kernel = _msda_backward_kernel
msda_forward_kernel_tuned = triton.autotune(
    configs=_all_configs(),
    key=_TUNING_KEY,
    prune_configs_by={"early_config_prune": _pruner(backward=False)},
)(_msda_forward_kernel)
msda_backward_kernel_tuned = triton.autotune(
    configs=_all_configs(),
    key=_TUNING_KEY,
    prune_configs_by={"early_config_prune": _pruner(backward=True)},
    reset_to_zero=["grad_value_ptr"],  # the kernel accumulates into it
)(_msda_backward_kernel)
