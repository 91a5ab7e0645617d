#!/usr/bin/env python
"""Measure inference latency and training-step time of a config, in one or several precisions.

    python tools/benchmark.py --config-file maskdino_r50_coco_instance_seg_50ep --device cuda \\
        --amp fp32,bf16 --compare official
    python tools/benchmark.py --config-file my_config.py --weights model.pth --height 256 --width 384 \\
        --train-batch 1 --train-size 256 --repeats 5 model.num_queries=100      # small, on CPU
    python tools/benchmark.py --config-file maskdino_r50_coco_instance_seg_50ep --device cpu \\
        --official-root ../MaskDINO --sizes "320x480,256x256;800x1216" \\
        --train-sizes "256x320,256x256" --threads 2 --warmup 2 --repeats 5    # vs the official, CPU
    python tools/benchmark.py --config-file maskdino_r50_coco_instance_seg_50ep --device cpu \\
        --backend eager,onnxruntime,torch_export --threads 2 --repeats 10  # exported backends

``--backend`` measures inference backends instead: see ``detrex_ext.export.benchmark``.

Defaults follow the recipe of the official code's H200 profile (the team note
``whole_model_profile.md``); every figure is the median over ``--repeats`` runs after ``--warmup``
untimed ones, for each precision of ``--amp`` (``fp32``, ``bf16``, ``fp16``; comma-separated),
starting each precision from the same weights.

Inference (batch 1, one ``--height`` x ``--width`` image, 800x1216 by default, no resize):

- ``compute only``: time inside the model's sub-modules that hold parameters (backbone, head);
- ``post-processing``: the rest of the model call (normalisation, padding, mask upsampling,
  instance/semantic/panoptic inference);
- ``end to end``: the Predictor on an in-memory image (to tensor -> model -> filtered outputs,
  left on the device, as detectron2's DefaultPredictor);
- ``end to end from file``: JPEG file -> decoded -> Predictor -> outputs copied to the CPU.

Training (``--train-batch`` images of ``--train-size`` pixels, 2 x 1024 by default, with
``--train-instances`` random rectangles per image, 12 and 7 by default): the steps are run by the
launcher's own ``Trainer`` (autocast; a GradScaler for fp16, none for bf16; gradient clipping from
the config's ``train.clip_grad`` when enabled) with the config's optimizer. ``step`` times whole
steps with the device synchronised only before and after. The split (``forward incl. losses`` /
``backward`` / ``optimizer incl. clipping``) is measured on separate steps, interleaved with the
whole ones, with the device synchronised at each phase boundary; those extra synchronisations
stop the host from queueing the next phase while the device works, so the split's sum is slightly
larger than the unsynchronised step. The forward phase ends when the model returns its loss dict;
the trainer's sum of the losses and its finite-value check (a few tiny kernels and one
synchronisation) fall into ``backward``.

Peak memory is the CUDA allocator's peak on GPU; on CPU it is the process's peak RSS, a lifetime
maximum that includes everything the process held before (earlier stages and precisions).
Prints a table (one column per precision, with ratios to the first) and writes every figure, the
command line, device and versions as JSON (``--output``). ``--compare official`` adds the official
code's H200 figures for the R50 instance, R50 panoptic and Swin-L instance configs.

Side by side with the official code (``--official-root``, an exported IDEA-Research/MaskDINO tree
with detectron2 importable; CPU): the official model of the same config is built with OUR weights
(random init, or ``--weights``; the key names are the official ones) and both models run the same
inputs in one process, alternating official / ours in every round (``--warmup`` untimed rounds,
then ``--repeats`` timed ones; medians and the median of the per-round ratios). Each ``--sizes``
batch (``;``-separated, images ``HxW`` comma-separated, synthetic) is timed in eval mode (model
call end to end incl. post-processing, and compute only: time inside backbone + head); each
``--train-sizes`` batch (rectangle instances, ``--train-instances``) is timed as a training step
(forward incl. losses + backward, no optimizer step; the seed is reset before every step, so both
draw the same random numbers). Outputs are checked: top-100 instance scores and classes, boxes,
semantic maps; training losses. ``--threads`` sets torch's CPU threads (default: torch's own
choice); the machine's load average is recorded, as timings on a shared machine vary.
"""

from __future__ import annotations

# Idle OpenMP threads sleep instead of spinning when the machine is busy at start (see
# detrex_ext.utils.openmp); only takes effect before torch is loaded. torch-free import.
from detrex_ext.utils.openmp import set_wait_policy_for_load  # noqa: E402

set_wait_policy_for_load()

import argparse
import json
import logging
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from detrex_ext.config import try_get_key
from detrex_ext.engine.benchmark import (
    benchmark_inference,
    benchmark_training,
    format_side_by_side,
    instance_counts,
    load_average,
    release_memory,
    synthetic_image,
    synthetic_training_batch,
)
from detrex_ext.engine.benchmark.report import device_description, format_table
from detrex_ext.engine.predictor import (
    AMP_DTYPES,
    Predictor,
    add_model_arguments,
    build_model,
    load_config,
    released_model_name,
)
from detrex_ext.engine.runner import build_optimizer as build_config_optimizer
from detrex_ext.engine.runner import clip_grad_params
from detrex_ext.export.benchmark import add_backend_arguments, run_backend_benchmark
from detrex_projects.maskdino.compare_official import compare_with_official
from detrex_projects.maskdino.official import OFFICIAL_H200, official_figures
from detrex_projects.maskdino.official import format_h200_comparison as format_official_comparison

logger = logging.getLogger("benchmark")

PRECISIONS = ("fp32", *sorted(AMP_DTYPES))  # fp32 = no autocast

__all__ = [  # names the tests and users reach through this tool
    "OFFICIAL_H200",
    "Predictor",
    "benchmark_inference",
    "benchmark_training",
    "instance_counts",
    "load_config",
    "main",
    "official_figures",
    "synthetic_image",
    "synthetic_training_batch",
]


def build_optimizer(cfg: Any, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The config's optimizer as the launcher builds it (``cfg`` is not modified); a config without
    an optimizer gets AdamW(lr=1e-4) with a warning."""
    if try_get_key(cfg, "optimizer", default=None) is None:
        logger.warning("the config has no optimizer; using AdamW(lr=1e-4)")
        return torch.optim.AdamW(model.parameters(), lr=1e-4)
    return build_config_optimizer(cfg, model)


# ----------------------------------------------------------------------------- command line


def parse_precisions(text: str) -> list[str]:
    """``"fp32,bf16"`` -> ``["fp32", "bf16"]``; argparse reports the error."""
    precisions = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in precisions if p not in PRECISIONS]
    if not precisions or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown precision(s) {unknown or [text]}: give a comma-separated list of "
            f"{', '.join(PRECISIONS)} (e.g. --amp fp32,bf16)"
        )
    if len(set(precisions)) != len(precisions):
        raise argparse.ArgumentTypeError(f"precision listed twice in {text!r}")
    return precisions


def parse_instance_counts(text: str) -> tuple[int, ...]:
    """``"12,7"`` -> ``(12, 7)``; argparse reports the error."""
    try:
        counts = tuple(int(c) for c in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 0:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated instance counts >= 0 (e.g. 12,7), got {text!r}"
        )
    return counts


def parse_size_batches(text: str) -> list[list[tuple[int, int]]]:
    """``"320x480,256x256;800x1216"`` -> ``[[(320, 480), (256, 256)], [(800, 1216)]]``."""
    try:
        batches = [
            [tuple(int(v) for v in size.lower().split("x")) for size in batch.split(",")]
            for batch in text.split(";")
        ]
        ok = all(len(s) == 2 and min(s) >= 16 for batch in batches for s in batch)
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(
            f"expected batches of HxW image sizes >= 16, images separated by ',' and batches by "
            f"';' (e.g. 320x480,256x256;800x1216), got {text!r}"
        )
    return batches


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(
        parser, weights="checkpoint (path, URL or model name); default: random init"
    )
    parser.add_argument(
        "--amp",
        type=parse_precisions,
        default=["fp32"],
        help=f"precisions to measure, comma-separated: {', '.join(PRECISIONS)} (default fp32)",
    )
    parser.add_argument("--height", type=int, default=800, help="inference image height")
    parser.add_argument("--width", type=int, default=1216, help="inference image width")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs before measuring")
    parser.add_argument(
        "--repeats", type=int, default=15, help="timed runs (the median is reported)"
    )
    parser.add_argument("--train-batch", type=int, default=2, help="images per training step")
    parser.add_argument("--train-size", type=int, default=1024, help="training image side length")
    parser.add_argument(
        "--train-instances",
        type=parse_instance_counts,
        default=(12, 7),
        help="rectangle instances per training image, repeated over the batch (default 12,7)",
    )
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--msda-backend", choices=["auto", "pytorch", "triton"], default=None)
    parser.add_argument(
        "--compare",
        choices=["official"],
        default=None,
        help="also print the official code's H200 figures (R50 instance, R50 panoptic, Swin-L "
        "instance configs) and, on an H200, the speed-ups",
    )
    parser.add_argument(
        "--official-root",
        type=Path,
        default=None,
        help="an exported IDEA-Research/MaskDINO tree (detectron2 importable): time the official "
        "model side by side with ours on the CPU (same weights and inputs, alternating)",
    )
    parser.add_argument(
        "--sizes",
        type=parse_size_batches,
        default=None,
        help="side by side: inference batches, e.g. '320x480,256x256;800x1216' (default: one "
        "image of --height x --width)",
    )
    parser.add_argument(
        "--train-sizes",
        type=parse_size_batches,
        default=None,
        help="side by side: training batches, e.g. '256x320,256x256' (default: --train-batch "
        "images of --train-size)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="side by side: also profile one inference call and one training step of each "
        "model (torch.profiler: module shares, top operators)",
    )
    parser.add_argument(
        "--output", type=Path, default=Path("benchmark.json"), help="JSON results file"
    )
    add_backend_arguments(parser)
    return parser


def _environment(args: argparse.Namespace, argv: Sequence[str], device: torch.device) -> dict:
    return {
        "command": shlex.join(["python", "tools/benchmark.py", *argv]),
        "config": args.config_file,
        "overrides": args.opts,
        "device": str(device),
        "device_name": device_description(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "precisions": args.amp,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "inference_size": [args.height, args.width],
    }


def run_benchmarks(args: argparse.Namespace, cfg: Any, model: torch.nn.Module) -> dict:
    """Inference and training figures for each precision, each starting from the same weights."""
    device = next(model.parameters()).device
    initial_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    num_classes = int(
        try_get_key(cfg, "model.num_classes", "model.sem_seg_head.num_classes", default=2)
    )
    counts = instance_counts(args.train_instances, args.train_batch)
    batch = synthetic_training_batch(args.train_batch, args.train_size, num_classes, counts)
    image = synthetic_image(args.height, args.width)
    inference: dict[str, Any] = {}
    training: dict[str, Any] = {"batch_size": args.train_batch, "instances_per_image": counts}
    training["image_size"] = [args.train_size, args.train_size]
    for precision in args.amp:
        model.load_state_dict(initial_state)
        amp = None if precision == "fp32" else precision
        if not args.skip_inference:
            logger.info(f"inference in {precision}")
            predictor = Predictor(model, amp=amp)  # no resize: the image already has the size
            measured = benchmark_inference(
                predictor, image, warmup=args.warmup, repeats=args.repeats
            )
            inference["network_modules"] = measured.pop("network_modules")
            inference[precision] = measured
            release_memory(model, device)
        if not args.skip_training:
            logger.info(f"training in {precision}")
            optimizer = build_optimizer(cfg, model)
            training["optimizer"] = type(optimizer).__name__
            training[precision] = benchmark_training(
                model,
                optimizer,
                batch,
                precision=precision,
                clip_grad=clip_grad_params(cfg),
                warmup=max(1, args.warmup),
                repeats=args.repeats,
            )
            del optimizer
            release_memory(model, device)
    return {
        "inference": inference or None,
        "training": None if args.skip_training else training,
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.train_batch < 1 or args.train_size < 16:
        parser.error("need --repeats >= 1, --warmup >= 0, --train-batch >= 1, --train-size >= 16")
    if args.compare == "official" and official_figures(args.config_file) is None:
        parser.error(
            f"--compare official: no official figures for {args.config_file!r}; known configs: "
            f"{', '.join(OFFICIAL_H200)}"
        )
    if args.official_root is not None and str(args.device or "cpu") != "cpu":
        parser.error("--official-root compares on the CPU: add --device cpu")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.msda_backend:
        from detrex_ext.layers import set_msda_backend

        set_msda_backend(args.msda_backend)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.official_root is not None:
        device = torch.device("cpu")
    cfg = load_config(args.config_file, args.opts)
    weights = args.weights or released_model_name(args.config_file)
    torch.manual_seed(0)  # the same random initialisation in every run
    model = build_model(cfg, weights, device)
    results = _environment(args, argv, device)
    results["weights"] = weights
    results["parameters"] = sum(p.numel() for p in model.parameters())
    results["clip_grad"] = clip_grad_params(cfg)
    results["threads"] = torch.get_num_threads()
    results["load_average_start"] = load_average()
    if args.backend:  # exported backends (ONNX Runtime, torch.export) against eager, on CPU
        results["backends"] = run_backend_benchmark(args, model)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2))
        return 0
    if args.official_root is not None:
        args.sizes = args.sizes or [[(args.height, args.width)]]
        args.train_sizes = (
            []
            if args.skip_training
            else (args.train_sizes or [[(args.train_size, args.train_size)] * args.train_batch])
        )
        if args.skip_inference:
            args.sizes = []
        results["side_by_side"] = compare_with_official(
            model,
            args.config_file,
            args.official_root,
            sizes=args.sizes,
            train_sizes=args.train_sizes,
            train_instances=args.train_instances,
            num_classes=int(try_get_key(cfg, "model.num_classes", default=2)),
            warmup=args.warmup,
            repeats=args.repeats,
            profile=args.profile,
        )
        results["load_average_end"] = load_average()
        print(format_side_by_side(results))
    else:
        results.update(run_benchmarks(args, cfg, model))
        results["load_average_end"] = load_average()
        print(format_table(results))
    if args.compare == "official":
        print(format_official_comparison(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str))
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
