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

# Forward tiles: the notes (H200 probe) found BLOCK_Q 16-32 x 4 warps best for fp32 values and
# 32-64 x 4-8 warps for bf16; BLOCK_Q=1 (the official one-query mapping) was 2x slower.
_FORWARD_TILES = [(8, 2), (16, 2), (16, 4), (32, 4), (32, 8), (64, 4), (64, 8)]
# Backward tiles: smaller, the tile also holds grad_output and four corner rows.
_BACKWARD_TILES = [(8, 2), (8, 4), (16, 2), (16, 4), (32, 4), (32, 8), (64, 8)]
# Largest BLOCK_Q * BLOCK_D tile kept by the pruning (fp32 elements); 8 queries always remain.
_MAX_TILE_ELEMENTS = 4096


def _configs(tiles: list[tuple[int, int]]) -> list[triton.Config]:
    return [triton.Config({"BLOCK_Q": bq}, num_warps=warps, num_stages=1) for bq, warps in tiles]


def _prune_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Drop tiles that would spill registers for wide heads or idle threads for narrow ones."""
    block_d = kwargs.get("BLOCK_D", named_args.get("BLOCK_D"))
    kept = [
        c
        for c in configs
        if c.kwargs["BLOCK_Q"] * block_d <= _MAX_TILE_ELEMENTS
        and c.num_warps * 32 <= c.kwargs["BLOCK_Q"] * block_d
    ]
    if not kept:  # very wide heads: the smallest tile, with few warps
        smallest = min(configs, key=lambda c: (c.kwargs["BLOCK_Q"], c.num_warps))
        kept = [smallest]
    return kept


# The autotuner adds the dtype of every tensor argument to this key by itself.
_TUNING_KEY = ["work_bucket", "HEAD_DIM", "NUM_LEVELS", "NUM_POINTS"]


@triton.jit
def _point_geometry(loc_ptr, attn_ptr, sample_offs, q_mask, k, height_f, width_f, COMPUTE):
    """Pixel corner coordinates and bilinear weights of sampling point ``k`` of each query.

    Returns the attention weight, the fractional offsets (fx, fy), the integer top-left corner
    (x0, y0) and the four in-bounds masks of the corners (top-left, top-right, bottom-left,
    bottom-right). Bounds are tested on the floored floats, so far-away points never overflow int32.
    """
    loc_x = tl.load(loc_ptr + 2 * (sample_offs + k), mask=q_mask, other=0.0).to(COMPUTE)
    loc_y = tl.load(loc_ptr + 2 * (sample_offs + k) + 1, mask=q_mask, other=0.0).to(COMPUTE)
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
def _level_shape(shapes_ptr, level_start_ptr, lvl: tl.constexpr, COMPUTE):
    height = tl.load(shapes_ptr + 2 * lvl).to(tl.int32)
    width = tl.load(shapes_ptr + 2 * lvl + 1).to(tl.int32)
    level_start = tl.load(level_start_ptr + lvl).to(tl.int32)
    return height, width, level_start, height.to(COMPUTE), width.to(COMPUTE)


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
    BLOCK_Q: tl.constexpr,
):
    pid = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    head = pid % num_heads
    offs_q = (pid // num_heads) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_mask = offs_q < num_queries
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    EVEN_D: tl.constexpr = BLOCK_D == HEAD_DIM

    row_stride = num_heads * HEAD_DIM
    value_base = value_ptr + batch * num_tokens * row_stride + head * HEAD_DIM
    # per-batch base pointers (64-bit scalars) + 32-bit vector offsets within the batch element
    qh = _query_head_rows(offs_q, head, num_heads, WIDE_INDEX)
    batch_rows = batch * num_queries * num_heads
    loc_ptr += batch_rows * (2 * NUM_LEVELS * NUM_POINTS)
    attn_ptr += batch_rows * (NUM_LEVELS * NUM_POINTS)
    sample_offs = qh * (NUM_LEVELS * NUM_POINTS)

    acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=COMPUTE)
    for lvl in tl.static_range(NUM_LEVELS):
        height, width, level_start, height_f, width_f = _level_shape(
            shapes_ptr, level_start_ptr, lvl, COMPUTE
        )
        for pt in tl.static_range(NUM_POINTS):
            k = lvl * NUM_POINTS + pt
            attn, fx, fy, x0, y0, in00, in01, in10, in11 = _point_geometry(
                loc_ptr, attn_ptr, sample_offs, q_mask, k, height_f, width_f, COMPUTE
            )
            off00, off01, off10, off11 = _row_offsets(
                level_start, y0, x0, width, row_stride, WIDE_INDEX
            )
            v00 = _load_rows(value_base, off00, in00, offs_d, d_mask, COMPUTE, EVEN_D)
            v01 = _load_rows(value_base, off01, in01, offs_d, d_mask, COMPUTE, EVEN_D)
            v10 = _load_rows(value_base, off10, in10, offs_d, d_mask, COMPUTE, EVEN_D)
            v11 = _load_rows(value_base, off11, in11, offs_d, d_mask, COMPUTE, EVEN_D)
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
    BLOCK_Q: tl.constexpr,
):
    pid = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    head = pid % num_heads
    offs_q = (pid // num_heads) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_mask = offs_q < num_queries
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    EVEN_D: tl.constexpr = BLOCK_D == HEAD_DIM

    row_stride = num_heads * HEAD_DIM
    batch_offset = batch * num_tokens * row_stride + head * HEAD_DIM
    value_base = value_ptr + batch_offset
    grad_value_base = grad_value_ptr + batch_offset
    qh = _query_head_rows(offs_q, head, num_heads, WIDE_INDEX)
    batch_rows = batch * num_queries * num_heads
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

    for lvl in tl.static_range(NUM_LEVELS):
        height, width, level_start, height_f, width_f = _level_shape(
            shapes_ptr, level_start_ptr, lvl, COMPUTE
        )
        for pt in tl.static_range(NUM_POINTS):
            k = lvl * NUM_POINTS + pt
            attn, fx, fy, x0, y0, in00, in01, in10, in11 = _point_geometry(
                loc_ptr, attn_ptr, sample_offs, q_mask, k, height_f, width_f, COMPUTE
            )
            off00, off01, off10, off11 = _row_offsets(
                level_start, y0, x0, width, row_stride, WIDE_INDEX
            )
            v00 = _load_rows(value_base, off00, in00, offs_d, d_mask, COMPUTE, EVEN_D)
            v01 = _load_rows(value_base, off01, in01, offs_d, d_mask, COMPUTE, EVEN_D)
            v10 = _load_rows(value_base, off10, in10, offs_d, d_mask, COMPUTE, EVEN_D)
            v11 = _load_rows(value_base, off11, in11, offs_d, d_mask, COMPUTE, EVEN_D)
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
            tl.store(
                grad_attn_ptr + sample_offs + k,
                grad_attn.to(grad_attn_ptr.dtype.element_ty),
                mask=q_mask,
            )
            loc_dtype = grad_loc_ptr.dtype.element_ty
            tl.store(grad_loc_ptr + 2 * (sample_offs + k), grad_x.to(loc_dtype), mask=q_mask)
            tl.store(grad_loc_ptr + 2 * (sample_offs + k) + 1, grad_y.to(loc_dtype), mask=q_mask)

            _scatter_rows(
                grad_value_base,
                off00,
                in00,
                (attn * gy * gx)[:, None] * grad_out,
                offs_d,
                d_mask,
                EVEN_D,
            )
            _scatter_rows(
                grad_value_base,
                off01,
                in01,
                (attn * gy * fx)[:, None] * grad_out,
                offs_d,
                d_mask,
                EVEN_D,
            )
            _scatter_rows(
                grad_value_base,
                off10,
                in10,
                (attn * fy * gx)[:, None] * grad_out,
                offs_d,
                d_mask,
                EVEN_D,
            )
            _scatter_rows(
                grad_value_base,
                off11,
                in11,
                (attn * fy * fx)[:, None] * grad_out,
                offs_d,
                d_mask,
                EVEN_D,
            )


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
    configs=_configs(_FORWARD_TILES),
    key=_TUNING_KEY,
    prune_configs_by={"early_config_prune": _prune_configs},
)(_msda_forward_kernel)
msda_backward_kernel_tuned = triton.autotune(
    configs=_configs(_BACKWARD_TILES),
    key=_TUNING_KEY,
    prune_configs_by={"early_config_prune": _prune_configs},
    reset_to_zero=["grad_value_ptr"],  # the kernel accumulates into it
)(_msda_backward_kernel)
