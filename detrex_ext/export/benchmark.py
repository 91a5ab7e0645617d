"""CPU inference latency of a model in eager PyTorch, ONNX Runtime and as a torch.export program.

``tools/benchmark.py --backend eager,onnxruntime,torch_export`` calls :func:`benchmark_backends`.
Every backend computes the same thing, the final predictions of one uint8 image of the given size
(batch 1): eager is ``model([{"image": ...}])`` (the Predictor's path without image decoding),
the exported backends run the post-processed graph. The backends are timed in alternation (one
run of each per round, ``detrex_ext.engine.benchmark.timing.alternate``), so a machine whose load changes during the
measurement slows them alike; figures are medians over the rounds after untimed warm-up runs,
with the same number of CPU threads for all.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from detrex_ext.engine.benchmark.timing import alternate

from .exporter import export_onnx, export_program, sample_images

__all__ = [
    "BACKENDS",
    "add_backend_arguments",
    "benchmark_backends",
    "format_backend_table",
    "parse_backends",
    "run_backend_benchmark",
]

BACKENDS = ("eager", "onnxruntime", "torch_export")


def parse_backends(text: str) -> list[str]:
    """``"eager,onnxruntime"`` -> a list of known backend names (argparse type)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in BACKENDS]
    if unknown or not names:
        raise ValueError(
            f"unknown backend(s) {unknown or text!r}; choose from {', '.join(BACKENDS)}"
        )
    return names


def _onnx_runner(path: Path, threads: int | None) -> Callable:
    from .deps import require

    ort = require("onnxruntime", "The onnxruntime benchmark")
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda images: session.run(None, {"images": images.numpy()})


def _program_runner(adapter, size, msda: str) -> Callable:
    module = export_program(adapter, size, msda=msda).module()

    def run(images: torch.Tensor):
        with torch.inference_mode():
            return module(images)

    return run


def _eager_runner(model: torch.nn.Module) -> Callable:
    def run(images: torch.Tensor):
        with torch.inference_mode():
            return model([{"image": image} for image in images])

    return run


def benchmark_backends(
    model: torch.nn.Module,
    backends: Sequence[str],
    *,
    height: int,
    width: int,
    threads: int | None = None,
    warmup: int = 2,
    repeats: int = 10,
    msda: Sequence[str] = ("grid_sample",),
    onnx_files: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Time each backend on one ``height x width`` image; the exported ones once per lowering.

    ``onnx_files`` (lowering -> file) times existing exports of this model at this size instead
    of exporting it again.

    Returns:
        ``{"threads", "size", "backends": {name: {"median_ms", "min_ms", "runs_ms",
        "export_s"}}, "speedup_vs_eager": {name: eager median / median}}``.
    """
    model = model.eval().cpu()
    if threads is not None:
        torch.set_num_threads(threads)
    adapter = model.export_adapter(postprocess=True)
    images = sample_images(1, height, width)
    runners: dict[str, Callable] = {}
    export_seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for backend in backends:
            for lowering in msda if backend != "eager" else [None]:
                name = backend if lowering is None else f"{backend} ({lowering})"
                start = time.perf_counter()
                if backend == "eager":
                    runners[name] = _eager_runner(model)
                elif backend == "onnxruntime":
                    path = (onnx_files or {}).get(lowering)
                    if path is None:
                        path = Path(folder) / f"model_{lowering}.onnx"
                        export_onnx(adapter, (height, width), path, msda=lowering)
                    runners[name] = _onnx_runner(path, threads)
                else:
                    runners[name] = _program_runner(adapter, (height, width), lowering)
                export_seconds[name] = time.perf_counter() - start
        candidates = {name: functools.partial(run, images) for name, run in runners.items()}
        seconds, _ = alternate(candidates, torch.device("cpu"), warmup, repeats)
    times = {name: [s * 1000 for s in runs] for name, runs in seconds.items()}
    results = {
        name: {
            "median_ms": statistics.median(runs),
            "min_ms": min(runs),
            "runs_ms": [round(t, 2) for t in runs],
            "export_s": round(export_seconds[name], 1),
        }
        for name, runs in times.items()
    }
    speedup = {}
    if "eager" in results:
        eager = results["eager"]["median_ms"]
        speedup = {name: eager / r["median_ms"] for name, r in results.items()}
    return {
        "threads": torch.get_num_threads() if threads is None else threads,
        "size": [height, width],
        "batch": 1,
        "warmup": warmup,
        "repeats": repeats,
        "backends": results,
        "speedup_vs_eager": speedup,
    }


def format_backend_table(results: dict[str, Any]) -> str:
    """A text table of :func:`benchmark_backends` results."""
    lines = [
        f"inference, batch 1, {results['size'][0]}x{results['size'][1]}, CPU, "
        f"{results['threads']} threads, median of {results['repeats']} alternated runs:",
        f"  {'backend':<28} {'median ms':>10} {'min ms':>9} {'vs eager':>9}",
    ]
    for name, figures in results["backends"].items():
        ratio = results["speedup_vs_eager"].get(name)
        shown = "" if ratio is None else f"{ratio:.2f}x"
        lines.append(
            f"  {name:<28} {figures['median_ms']:>10.1f} {figures['min_ms']:>9.1f} {shown:>9}"
        )
    return "\n".join(lines)


def _backend_list(text: str) -> list[str]:
    try:
        return parse_backends(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--msda`` of ``tools/benchmark.py`` (which has ``--threads``)."""
    parser.add_argument(
        "--backend",
        type=_backend_list,
        default=None,
        help="compare inference backends on CPU instead of the precision and training "
        f"figures: comma-separated, from {', '.join(BACKENDS)}",
    )
    parser.add_argument(
        "--msda",
        default="grid_sample",
        help="deformable-attention lowerings of the exported backends: grid_sample,gather",
    )


def run_backend_benchmark(args: argparse.Namespace, model: torch.nn.Module) -> dict[str, Any]:
    """Run and print the ``--backend`` comparison of ``tools/benchmark.py``'s arguments
    (``--height``, ``--width``, ``--warmup``, ``--repeats``, ``--threads``, ``--msda``)."""
    if next(model.parameters()).device.type != "cpu":
        raise SystemExit("error: --backend measures CPU backends; pass --device cpu")
    figures = benchmark_backends(
        model,
        args.backend,
        height=args.height,
        width=args.width,
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        msda=[name.strip() for name in args.msda.split(",")],
    )
    print(format_backend_table(figures))
    return figures
