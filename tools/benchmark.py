#!/usr/bin/env python
"""Measure inference latency and training-step time of a config, in one or several precisions.

    python tools/benchmark.py --config-file maskdino_r50_coco_instance_seg_50ep --device cuda \\
        --amp fp32,bf16 --compare official
    python tools/benchmark.py --config-file my_config.py --weights model.pth --height 256 --width 384 \\
        --train-batch 1 --train-size 256 --repeats 5 model.num_queries=100      # small, on CPU
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
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tabulate import tabulate

from detrex_ext.config import try_get_key
from detrex_ext.engine.benchmark import benchmark_inference, benchmark_training, release_memory
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
from detrex_ext.structures import Boxes, Instances

logger = logging.getLogger("benchmark")

PRECISIONS = ("fp32", *sorted(AMP_DTYPES))  # fp32 = no autocast

# The official Mask DINO (IDEA-Research/MaskDINO 3831d851 on detectron2 02b5c4e2, its compiled CUDA
# deformable attention) on one NVIDIA H200, torch 2.11.0+cu130, random init, measured 2026-11-25:
# the team note ``whole_model_profile.md``. Same recipe as this tool's defaults: training batch 2
# at 1024x1024 with 12 and 7 rectangles, fp16 autocast + GradScaler, AdamW, clipping at 0.01;
# inference batch 1 at 800x1216 in fp32. Times in ms, memory in GB as the note prints it (read
# here as 10^9 bytes; the note does not say whether it means GiB).
OFFICIAL_H200_RECIPE = {"train": (2, 1024, (12, 7)), "inference": (800, 1216)}
OFFICIAL_H200 = {
    "maskdino_r50_coco_instance_seg_50ep": {
        "parameters": 52_058_004,
        "training": {
            "step": 455.0,
            "forward": 271.0,
            "backward": 183.0,
            "optimizer": 9.0,
            "peak_memory_gb": 11.9,
        },
        "inference": {"end_to_end": 58.7, "compute_only": 48.5, "peak_memory_gb": 4.9},
    },
    "maskdino_r50_coco_panoptic_seg_50ep": {
        "parameters": 52_085_193,
        "training": {"step": 363.0, "peak_memory_gb": 11.9},
        "inference": {"end_to_end": 230.2, "compute_only": 45.0},
    },
    "maskdino_swinl_coco_instance_seg_50ep": {
        "parameters": 222_799_144,
        "training": {"step": 781.0, "peak_memory_gb": 44.0},
        "inference": {"end_to_end": 169.8, "compute_only": 151.6},
    },
}
OFFICIAL_PRECISION = {"training": "fp16 AMP", "inference": "fp32"}

# ----------------------------------------------------------------------------- inputs


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic HWC uint8 RGB image with smooth structure (upsampled noise)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, height // 32), max(2, width // 32), generator=generator)
    image = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")
    return (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def instance_counts(counts: int | Sequence[int], batch_size: int) -> list[int]:
    """Instances per image: one count for all images, or a list repeated cyclically over the batch
    (``(12, 7)`` at batch 4 gives 12, 7, 12, 7; at batch 1 gives 12)."""
    counts = [counts] if isinstance(counts, int) else list(counts)
    if not counts or any(c < 0 for c in counts):
        raise ValueError(f"instance counts must be a non-empty list of integers >= 0, got {counts}")
    return [counts[i % len(counts)] for i in range(batch_size)]


def synthetic_training_batch(
    batch_size: int,
    size: int,
    num_classes: int,
    instances_per_image: int | Sequence[int] = 6,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Model inputs with random rectangle instances and a matching sem_seg.

    Each dict: ``image`` uint8 [3, size, size], ``height``/``width`` = size, ``instances`` with
    ``gt_boxes`` [N, 4] (XYXY pixels), ``gt_classes`` [N] int64, ``gt_masks`` [N, size, size] bool
    (the box's pixels), ``sem_seg`` [size, size] int64 (255 = unlabelled, later masks on top).
    N per image: see :func:`instance_counts`.
    """
    generator = torch.Generator().manual_seed(seed)
    batch = []
    for count in instance_counts(instances_per_image, batch_size):
        image = torch.from_numpy(
            synthetic_image(size, size, int(torch.randint(0, 10**6, (1,), generator=generator)))
        ).permute(2, 0, 1)
        corners = torch.randint(0, size - 8, (count, 2), generator=generator)
        extents = torch.randint(8, max(9, size // 2), (count, 2), generator=generator)
        boxes = torch.cat([corners, (corners + extents).clamp(max=size)], dim=1).float()
        masks = torch.zeros(count, size, size, dtype=torch.bool)
        for mask, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist()):
            mask[y0:y1, x0:x1] = True
        classes = torch.randint(0, num_classes, (count,), generator=generator)
        sem_seg = torch.full((size, size), 255, dtype=torch.long)
        for mask, label in zip(masks, classes):
            sem_seg[mask] = label
        instances = Instances(
            (size, size), gt_boxes=Boxes(boxes), gt_classes=classes, gt_masks=masks
        )
        batch.append(
            {
                "image": image,
                "height": size,
                "width": size,
                "instances": instances,
                "sem_seg": sem_seg,
            }
        )
    return batch


def build_optimizer(cfg: Any, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The config's optimizer as the launcher builds it (``cfg`` is not modified); a config without
    an optimizer gets AdamW(lr=1e-4) with a warning."""
    if try_get_key(cfg, "optimizer", default=None) is None:
        logger.warning("the config has no optimizer; using AdamW(lr=1e-4)")
        return torch.optim.AdamW(model.parameters(), lr=1e-4)
    return build_config_optimizer(cfg, model)


# ----------------------------------------------------------------------------- report


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def memory_kind(device: str) -> str:
    if device.startswith("cuda"):
        return "peak memory (CUDA allocator)"
    return "peak memory (process RSS, lifetime max)"


def _size(values: Sequence[int]) -> str:
    return "x".join(str(v) for v in values)


def _figure_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(label, unit, section, key, statistic) of every figure the results hold."""
    rows = []
    memory = memory_kind(results["device"])
    if results.get("inference"):
        where = f"batch 1 @ {_size(results['inference_size'])}"
        modules = "+".join(results["inference"]["network_modules"])
        for label, key in (
            (f"inference compute only ({modules}), {where}", "compute_only"),
            ("- post-processing", "post_processing"),
            (f"inference end to end (Predictor, in-memory image), {where}", "end_to_end"),
            ("- end to end from file (JPEG decode, outputs to CPU)", "end_to_end_from_file"),
        ):
            rows.append((label, "ms", "inference", key, "median_ms"))
        rows.append(("- images/s end to end", "img/s", "inference", "end_to_end", "images_per_s"))
        rows.append((f"- inference {memory}", "MiB", "inference", "peak_memory_mib", ""))
    if results.get("training"):
        recipe = results["training"]
        counts = "+".join(str(c) for c in recipe["instances_per_image"])
        step = f"training step, batch {recipe['batch_size']} @ {_size(recipe['image_size'])}"
        rows.append((f"{step} ({counts} instances)", "ms", "training", "step", "median_ms"))
        for label, key in (
            ("- forward incl. losses (synchronised)", "forward"),
            ("- backward (synchronised)", "backward"),
            ("- optimizer incl. clipping (synchronised)", "optimizer"),
        ):
            rows.append((label, "ms", "training", key, "median_ms"))
        rows.append(("- sum of the synchronised split", "ms", "training", "split_sum_ms", ""))
        rows.append(("- images/s training", "img/s", "training", "step", "images_per_s"))
        rows.append((f"- training {memory}", "MiB", "training", "peak_memory_mib", ""))
    return rows


def _figure(results: dict[str, Any], section: str, precision: str, key: str, stat: str) -> float:
    value = results[section][precision][key]
    return value[stat] if stat else value


def gain(baseline: float, value: float, unit: str) -> float:
    """How many times better ``value`` is than ``baseline``: rates higher, times/memory lower."""
    if unit == "img/s":
        return value / baseline if baseline > 0 else float("nan")
    return baseline / value if value > 0 else float("nan")


def format_table(results: dict[str, Any]) -> str:
    """One row per figure, one column per precision, then each precision's gain over the first."""
    precisions = results["precisions"]
    headers = ["figure", "unit", *precisions]
    headers += [f"{p} gain vs {precisions[0]}" for p in precisions[1:]]
    rows = []
    for label, unit, section, key, stat in _figure_rows(results):
        values = [_figure(results, section, p, key, stat) for p in precisions]
        gains = [f"{gain(values[0], v, unit):.2f}x" for v in values[1:]]
        rows.append([label, unit, *values, *gains])
    head = (
        f"{results['config']} | {results['device_name']} | torch {results['torch']} | "
        f"{results['parameters'] / 1e6:.2f}M parameters | clip_grad {results['clip_grad']} | "
        f"median of {results['repeats']} after {results['warmup']} warm-up"
    )
    return "\n".join([head, tabulate(rows, headers=headers, floatfmt=".1f")])


def official_figures(config: str) -> dict[str, Any] | None:
    """The official H200 figures of a config (file path, packaged path or model name), or None."""
    return OFFICIAL_H200.get(Path(str(config)).stem)


def _recipe_differences(results: dict[str, Any]) -> list[str]:
    differences = []
    training, inference = results.get("training"), results.get("inference")
    if training:
        ours = (training["batch_size"], training["image_size"][0], training["image_size"][1])
        batch, size, counts = OFFICIAL_H200_RECIPE["train"]
        if ours != (batch, size, size) or tuple(training["instances_per_image"]) != counts:
            differences.append(f"training batch {batch} @ {size}x{size} with {counts} instances")
    if inference and tuple(results["inference_size"]) != OFFICIAL_H200_RECIPE["inference"]:
        differences.append(f"inference at {_size(OFFICIAL_H200_RECIPE['inference'])}")
    return differences


def format_official_comparison(results: dict[str, Any]) -> str:
    """The official code's H200 figures next to ours; speed-ups (official / ours; for memory:
    how many times less we use) only when ours ran on an H200 with the same recipe."""
    official = official_figures(results["config"])
    precisions = results["precisions"]
    on_cuda = results["device"].startswith("cuda")
    differences = _recipe_differences(results)
    ratios = "H200" in results["device_name"] and not differences
    headers = ["figure", "official H200", *(f"ours {p}" for p in precisions)]
    if ratios:
        headers += [f"speed-up {p}" for p in precisions]
    labels = {
        "step": "training step (ms)",
        "forward": "- forward incl. losses (ms)",
        "backward": "- backward (ms)",
        "optimizer": "- optimizer (ms)",
        "end_to_end": "inference end to end (ms)",
        "compute_only": "inference compute only (ms)",
    }
    rows = []
    for section in ("training", "inference"):
        if not results.get(section):
            continue
        for key, reference in official[section].items():
            if key == "peak_memory_gb":
                if not on_cuda:
                    continue
                label = f"{section} peak memory (GB)"
                ours = [results[section][p]["peak_memory_mib"] * 2**20 / 1e9 for p in precisions]
            else:
                label = labels[key]
                ours = [results[section][p][key]["median_ms"] for p in precisions]
            row = [label, f"{reference:g} ({OFFICIAL_PRECISION[section]})", *ours]
            if ratios:
                row += [f"{reference / v:.2f}x" if v > 0 else "n/a" for v in ours]
            rows.append(row)
    lines = [
        "official Mask DINO on one H200 (team note whole_model_profile.md) vs this run:",
        tabulate(rows, headers=headers, floatfmt=".1f"),
    ]
    if ratios:
        lines.append("speed-up = official / ours (for memory: how many times less we use)")
    if "H200" not in results["device_name"]:
        lines.append(
            f"note: this run is on {results['device_name']}, not an H200: the official figures "
            "are for reference only, no speed-up is computed"
        )
    if differences:
        lines.append(f"note: the official recipe is {'; '.join(differences)}: no speed-up computed")
    if results["parameters"] != official["parameters"]:
        lines.append(
            f"note: this model has {results['parameters']:,} parameters, the official "
            f"{official['parameters']:,}: the configs differ (overrides?)"
        )
    elif results["overrides"]:
        lines.append(f"note: config overrides were given: {' '.join(results['overrides'])}")
    return "\n".join(lines)


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
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.msda_backend:
        from detrex_ext.layers import set_msda_backend

        set_msda_backend(args.msda_backend)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = load_config(args.config_file, args.opts)
    weights = args.weights or released_model_name(args.config_file)
    torch.manual_seed(0)  # the same random initialisation in every run
    model = build_model(cfg, weights, device)
    results = _environment(args, argv, device)
    results["weights"] = weights
    results["parameters"] = sum(p.numel() for p in model.parameters())
    results["clip_grad"] = clip_grad_params(cfg)
    if args.backend:  # exported backends (ONNX Runtime, torch.export) against eager, on CPU
        results["backends"] = run_backend_benchmark(args, model)
        args.output.write_text(json.dumps(results, indent=2))
        return 0
    results.update(run_benchmarks(args, cfg, model))
    print(format_table(results))
    if args.compare == "official":
        print(format_official_comparison(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
