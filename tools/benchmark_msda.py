#!/usr/bin/env python
"""Time multi-scale deformable attention: the PyTorch (grid_sample) path vs the Triton path.

    python tools/benchmark_msda.py                       # GPU: the three Mask DINO shapes, fp32 + bf16
    python tools/benchmark_msda.py --dtypes bf16 --shapes encoder_train --repeats 50
    python tools/benchmark_msda.py --device cpu --interpret    # smoke run at toy shapes, no GPU

Both paths go through ``detrex_ext.layers.multi_scale_deformable_attn`` (the custom op the model
calls) with the backend forced by ``set_msda_backend``. For every shape, dtype and path it reports
the median of ``--repeats`` timed calls after ``--warmup`` untimed ones (the first Triton calls
compile and autotune), measured with CUDA events:

- forward: inputs without gradients;
- forward+backward: the op's output ``.backward()`` into value, locations and weights;
- peak memory: the CUDA allocator's peak during one call above what was allocated before it.

``dtype`` is the dtype of ``value`` (and of the output gradient); sampling locations and attention
weights stay fp32, as in the model. Locations are realistic by default (each query's reference
point plus offsets of a few pixels; ``--locations uniform`` draws them over the whole map). Each
row also gives the Triton path's error relative to the PyTorch path (relative L2 of the output
and of the three gradients), so a fast wrong kernel cannot pass unnoticed.

Shapes (Mask DINO R50, 8 heads x 32 channels, 4 levels, 4 points):

- ``encoder_train``: batch 2, levels 128x128, 64x64, 32x32, 16x16, 21,760 queries (all tokens);
- ``decoder_train``: batch 2, same levels, 500 queries;
- ``encoder_infer``: batch 1, levels 100x167, 50x84, 25x42, 13x21, all 22,223 tokens as queries.

Without CUDA it exits with status 2, unless ``--device cpu --interpret`` is given: then it runs the
same code at toy shapes through Triton's interpreter (wall-clock timer, no memory figures) to check
that the script and both paths work.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch

TARGETS = {  # issue 7: speed-ups of Triton over PyTorch at encoder_train on one H200
    ("encoder_train", "fp32", "forward"): 16.0,
    ("encoder_train", "fp32", "forward+backward"): 16.0,
    ("encoder_train", "bf16", "forward+backward"): 20.0,
}
PATHS = ("pytorch", "triton")


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    levels: tuple[tuple[int, int], ...]
    queries: int | None  # None: every token is a query (encoder self-attention)
    heads: int = 8
    head_dim: int = 32
    points: int = 4

    @property
    def tokens(self) -> int:
        return sum(h * w for h, w in self.levels)

    @property
    def num_queries(self) -> int:
        return self.tokens if self.queries is None else self.queries


TRAIN_LEVELS = ((128, 128), (64, 64), (32, 32), (16, 16))
SHAPES = {
    "encoder_train": Shape("encoder_train", 2, TRAIN_LEVELS, None),
    "decoder_train": Shape("decoder_train", 2, TRAIN_LEVELS, 500),
    "encoder_infer": Shape("encoder_infer", 1, ((100, 167), (50, 84), (25, 42), (13, 21)), None),
}
# --interpret: the same three shapes shrunk so the interpreter takes seconds
TOY_SHAPES = {
    "encoder_train": Shape("encoder_train", 2, ((4, 4), (2, 2), (1, 1)), None, 2, 8, 2),
    "decoder_train": Shape("decoder_train", 2, ((4, 4), (2, 2), (1, 1)), 7, 2, 8, 2),
    "encoder_infer": Shape("encoder_infer", 1, ((3, 5), (2, 3), (1, 2)), None, 2, 8, 2),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument(
        "--dtypes", nargs="+", choices=["fp32", "bf16", "fp16"], default=["fp32", "bf16"]
    )
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls first (default 10)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls (default 30)")
    parser.add_argument("--locations", choices=["local", "uniform"], default="local")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu with --interpret")
    parser.add_argument(
        "--interpret",
        action="store_true",
        help="run the Triton kernels through Triton's interpreter at toy shapes (smoke test)",
    )
    parser.add_argument("--output", help="also write the figures to this JSON file")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- inputs


def make_inputs(shape: Shape, dtype, device: str, locations: str, seed: int) -> dict:
    """value [B,S,H,D] in ``dtype``; fp32 locations [B,Q,H,L,P,2] and softmax weights [B,Q,H,L,P]."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    b, q, h, p = shape.batch, shape.num_queries, shape.heads, shape.points
    num_levels = len(shape.levels)
    value = torch.randn(b, shape.tokens, h, shape.head_dim, generator=gen)
    sizes = torch.tensor([(w, hh) for hh, w in shape.levels], dtype=torch.float32)  # (x, y) sizes
    if locations == "uniform":
        loc = torch.rand(b, q, h, num_levels, p, 2, generator=gen)
    else:  # reference point (a pixel centre for the encoder, random for the decoder) + ~2 px
        if shape.queries is None:
            centres = torch.cat([_pixel_centres(hh, w) for hh, w in shape.levels])  # [S, 2]
            ref = centres[None, :, None, None, None, :].expand(b, q, 1, 1, 1, 2)
        else:
            ref = torch.rand(b, q, 1, 1, 1, 2, generator=gen)
        offsets = torch.randn(b, q, h, num_levels, p, 2, generator=gen) * 2.0
        loc = ref + offsets / sizes[None, None, None, :, None, :]
    logits = torch.randn(b, q, h, num_levels * p, generator=gen)
    weights = logits.softmax(-1).view(b, q, h, num_levels, p)
    grad_out = torch.randn(b, q, h * shape.head_dim, generator=gen)
    starts = [0]
    for hh, w in shape.levels[:-1]:
        starts.append(starts[-1] + hh * w)
    return {
        "value": value.to(device, dtype),
        "spatial_shapes": torch.tensor(shape.levels, dtype=torch.int64, device=device),
        "level_start_index": torch.tensor(starts, dtype=torch.int64, device=device),
        "sampling_locations": loc.to(device),
        "attention_weights": weights.to(device),
        "grad_output": grad_out.to(device, dtype),
    }


def _pixel_centres(height: int, width: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(
        (torch.arange(height) + 0.5) / height, (torch.arange(width) + 0.5) / width, indexing="ij"
    )
    return torch.stack([xs, ys], -1).view(-1, 2)


# ----------------------------------------------------------------------------- timing


class Timer:
    """Median of individually timed calls: CUDA events on GPU, perf_counter on CPU."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def median_ms(self, fn: Callable[[], object], warmup: int, repeats: int) -> float:
        for _ in range(warmup):
            fn()
        self.sync()
        times = []
        for _ in range(repeats):
            if self.cuda:
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    def peak_mib(self, fn: Callable[[], object]) -> float | None:
        """Allocator peak during one call above the memory allocated before it."""
        if not self.cuda:
            return None
        self.sync()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        self.sync()
        return (torch.cuda.max_memory_allocated() - before) / 2**20


# ----------------------------------------------------------------------------- measurements


OP_ARGS = (
    "value",
    "spatial_shapes",
    "level_start_index",
    "sampling_locations",
    "attention_weights",
)
DIFFERENTIABLE = (0, 3, 4)  # value, sampling_locations, attention_weights


def _call(op, inputs: dict, requires_grad: bool):
    """One op call; with ``requires_grad`` also its backward. Returns (output, grads or None)."""
    args = [inputs[k] for k in OP_ARGS]
    if requires_grad:
        for i in DIFFERENTIABLE:
            args[i] = args[i].detach().requires_grad_()
    out = op(*args)
    if not requires_grad:
        return out, None
    out.backward(inputs["grad_output"])
    return out, [args[i].grad for i in DIFFERENTIABLE]


def measure_path(path: str, inputs: dict, timer: Timer, args: argparse.Namespace) -> dict:
    from detrex_ext.layers import multi_scale_deformable_attn, set_msda_backend

    set_msda_backend(path)
    try:

        def forward():
            with torch.no_grad():
                return _call(multi_scale_deformable_attn, inputs, requires_grad=False)

        def forward_backward():
            return _call(multi_scale_deformable_attn, inputs, requires_grad=True)

        results = {
            "forward_ms": timer.median_ms(forward, args.warmup, args.repeats),
            "forward+backward_ms": timer.median_ms(forward_backward, args.warmup, args.repeats),
            "forward_peak_mib": timer.peak_mib(forward),
            "forward+backward_peak_mib": timer.peak_mib(forward_backward),
        }
        out, grads = forward_backward()
        results["tensors"] = [out.detach()] + grads
    finally:
        set_msda_backend(None)
    return results


def relative_errors(result: list, reference: list) -> list[float]:
    errors = []
    for ours, theirs in zip(result, reference):
        ours, theirs = ours.double(), theirs.double()
        errors.append(((ours - theirs).norm() / theirs.norm().clamp_min(1e-30)).item())
    return errors


def triton_configs() -> dict:
    """The tiles the autotuner picked last (None in the interpreter, which does not tune)."""
    from detrex_ext.layers import _ms_deform_attn_triton_kernels as kernels

    chosen = {}
    for name, kernel in (
        ("fwd", kernels.msda_forward_kernel_tuned),
        ("bwd", kernels.msda_backward_kernel_tuned),
    ):
        best = getattr(kernel, "best_config", None)
        chosen[name] = None if best is None else {**best.kwargs, "num_warps": best.num_warps}
    return chosen


def run(args: argparse.Namespace) -> list[dict]:
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    shapes = TOY_SHAPES if args.interpret else SHAPES
    timer = Timer(args.device)
    rows = []
    for shape_name in args.shapes:
        shape = shapes[shape_name]
        for dtype_name in args.dtypes:
            inputs = make_inputs(shape, dtypes[dtype_name], args.device, args.locations, args.seed)
            measured = {path: measure_path(path, inputs, timer, args) for path in PATHS}
            errors = relative_errors(measured["triton"]["tensors"], measured["pytorch"]["tensors"])
            row = {"shape": shape_name, "dtype": dtype_name, "queries": shape.num_queries}
            for path in PATHS:
                for key, val in measured[path].items():
                    if key != "tensors":
                        row[f"{path}_{key}"] = val
            for kind in ("forward", "forward+backward"):
                row[f"speedup_{kind}"] = row[f"pytorch_{kind}_ms"] / row[f"triton_{kind}_ms"]
            row["triton_rel_error"] = dict(
                zip(("output", "grad_value", "grad_loc", "grad_attn"), errors)
            )
            row["triton_configs"] = triton_configs()
            rows.append(row)
            print_row(row)
    return rows


# ----------------------------------------------------------------------------- report


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_row(row: dict) -> None:
    print(f"\n{row['shape']} ({row['queries']} queries), value {row['dtype']}:")
    print(
        f"  {'path':<8} {'fwd ms':>9} {'fwd+bwd ms':>11} {'fwd peak MiB':>13} {'fwd+bwd peak MiB':>17}"
    )
    for path in PATHS:
        print(
            f"  {path:<8} {row[f'{path}_forward_ms']:>9.3f} {row[f'{path}_forward+backward_ms']:>11.3f}"
            f" {_fmt(row[f'{path}_forward_peak_mib'], '.1f'):>13}"
            f" {_fmt(row[f'{path}_forward+backward_peak_mib'], '.1f'):>17}"
        )
    print(
        f"  speed-up triton vs pytorch: forward {row['speedup_forward']:.2f}x, "
        f"forward+backward {row['speedup_forward+backward']:.2f}x"
    )
    errors = ", ".join(f"{k} {v:.1e}" for k, v in row["triton_rel_error"].items())
    print(f"  triton vs pytorch rel. L2 error: {errors}")
    if any(row["triton_configs"].values()):
        print(f"  triton configs: {row['triton_configs']}")


def print_targets(rows: list[dict], interpret: bool) -> None:
    print("\nIssue 7 targets (Triton vs PyTorch at encoder_train, on one H200):")
    for (shape, dtype, kind), target in TARGETS.items():
        row = next((r for r in rows if r["shape"] == shape and r["dtype"] == dtype), None)
        if row is None:
            print(f"  {kind} {dtype}: >= {target:.0f}x  (not measured in this run)")
            continue
        speedup = row[f"speedup_{kind}"]
        verdict = (
            "toy shapes, not comparable"
            if interpret
            else ("met" if speedup >= target else "MISSED")
        )
        print(f"  {kind} {dtype}: {speedup:.2f}x (target >= {target:.0f}x): {verdict}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.interpret:
        # must be set before the Triton kernels are first imported (decorated)
        os.environ["TRITON_INTERPRET"] = "1"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "CUDA is not available: this benchmark times GPU kernels and needs an NVIDIA (or ROCm) "
            "GPU. For a smoke run of the same code at toy shapes on CPU, use "
            "`--device cpu --interpret`.",
            file=sys.stderr,
        )
        return 2
    if args.device == "cpu" and not args.interpret:
        print(
            "--device cpu needs --interpret (the Triton kernels only run on CPU there).",
            file=sys.stderr,
        )
        return 2
    from detrex_ext.layers import ms_deform_attn_triton

    if not ms_deform_attn_triton.is_available():
        print("Triton is not available here (pip install triton).", file=sys.stderr)
        return 2
    device_name = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else "CPU (Triton interpreter, toy shapes)"
    )
    print(
        f"device: {device_name}; torch {torch.__version__}; warm-up {args.warmup}, median of {args.repeats}"
    )
    rows = run(args)
    print_targets(rows, args.interpret)
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"device": device_name, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
