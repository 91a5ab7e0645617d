#!/usr/bin/env python
"""Measure inference latency and training-step time of a config.

    python tools/benchmark.py --config-file maskdino_r50_coco_instance_seg_50ep --device cuda --amp bf16
    python tools/benchmark.py --config-file my_config.py --weights model.pth --height 256 --width 384 \\
        --train-batch 1 --train-size 256 --repeats 5 model.num_queries=100      # small, on CPU

Inference (batch 1, one fixed ``--height`` x ``--width`` image, no resize; median over
``--repeats`` after ``--warmup`` runs):

- ``model forward``: time inside the model's sub-modules that hold parameters (backbone, head);
- ``post-processing``: the rest of the model call (normalisation, padding, mask upsampling,
  instance/semantic/panoptic inference);
- ``end-to-end``: image file -> decoded -> model -> outputs on the CPU, through the Predictor.

Training: one optimizer step (forward with losses, backward, step) on a synthetic batch of
``--train-batch`` images of ``--train-size`` pixels with random rectangular instances.
Peak memory is the CUDA allocator's peak on GPU, the process's peak RSS on CPU (which includes
everything the process ever held). Prints a table and writes the figures as JSON (``--output``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tabulate import tabulate

from detrex_ext.engine.predictor import (
    AMP_DTYPES,
    Predictor,
    add_model_arguments,
    build_model,
    load_config,
    released_model_name,
)
from detrex_ext.structures import Boxes, Instances

logger = logging.getLogger("benchmark")

# ----------------------------------------------------------------------------- inputs


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic HWC uint8 RGB image with smooth structure (upsampled noise)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, height // 32), max(2, width // 32), generator=generator)
    image = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")
    return (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def synthetic_training_batch(
    batch_size: int, size: int, num_classes: int, instances_per_image: int = 6, seed: int = 0
) -> list[dict[str, Any]]:
    """Model inputs with random rectangle instances (classes, boxes, masks) and a matching sem_seg."""
    generator = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(batch_size):
        image = torch.from_numpy(
            synthetic_image(size, size, int(torch.randint(0, 10**6, (1,), generator=generator)))
        ).permute(2, 0, 1)
        corners = torch.randint(0, size - 8, (instances_per_image, 2), generator=generator)
        extents = torch.randint(8, max(9, size // 2), (instances_per_image, 2), generator=generator)
        boxes = torch.cat([corners, (corners + extents).clamp(max=size)], dim=1).float()
        masks = torch.zeros(instances_per_image, size, size, dtype=torch.bool)
        for mask, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist()):
            mask[y0:y1, x0:x1] = True
        classes = torch.randint(0, num_classes, (instances_per_image,), generator=generator)
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


# ----------------------------------------------------------------------------- timing helpers


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Seconds ``fn`` takes, with the device synchronised before and after."""
    _synchronize(device)
    start = time.perf_counter()
    result = fn()
    _synchronize(device)
    return time.perf_counter() - start, result


def summarize(seconds: list[float], images_per_run: int = 1) -> dict[str, float]:
    median = statistics.median(seconds)
    return {
        "median_ms": 1000 * median,
        "mean_ms": 1000 * statistics.fmean(seconds),
        "min_ms": 1000 * min(seconds),
        "max_ms": 1000 * max(seconds),
        "images_per_s": images_per_run / median if median > 0 else float("inf"),
        "runs": len(seconds),
    }


class NetworkTimer:
    """Adds up the time spent in a model's parameter-holding children (its network) per call."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.device = device
        self.seconds = 0.0
        self.names = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
        self._handles = []
        for name in self.names:
            module = getattr(model, name)
            self._handles.append(module.register_forward_pre_hook(self._start))
            self._handles.append(module.register_forward_hook(self._stop))
        self._started = 0.0

    def _start(self, *_: Any) -> None:
        _synchronize(self.device)
        self._started = time.perf_counter()

    def _stop(self, *_: Any) -> None:
        _synchronize(self.device)
        self.seconds += time.perf_counter() - self._started

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def outputs_to_cpu(outputs: Any) -> Any:
    """Move every tensor of a model output to the CPU (what a user of the results pays for)."""
    if isinstance(outputs, torch.Tensor):
        return outputs.cpu()
    if isinstance(outputs, dict):
        return {k: outputs_to_cpu(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(outputs_to_cpu(v) for v in outputs)
    if hasattr(outputs, "to"):
        return outputs.to("cpu")
    return outputs


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


# ----------------------------------------------------------------------------- benchmarks


def benchmark_inference(
    predictor: Predictor, image: np.ndarray, *, warmup: int, repeats: int
) -> dict[str, Any]:
    """Forward, post-processing and model-call latency, then end-to-end from an image file."""
    device = predictor.device
    inputs = [predictor.preprocess(image)]
    _reset_peak_memory(device)
    network = NetworkTimer(predictor.model, device)
    forward, post, call = [], [], []
    try:
        for run in range(warmup + repeats):
            network.seconds = 0.0
            seconds, _ = timed(lambda: predictor.forward_batch(inputs), device)
            if run >= warmup:
                call.append(seconds)
                forward.append(network.seconds)
                post.append(seconds - network.seconds)
    finally:
        network.remove()
    peak = peak_memory_mib(device)

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "image.jpg")
        Image.fromarray(image).save(path, quality=95)
        end_to_end = []
        for run in range(warmup + repeats):
            seconds, _ = timed(lambda: outputs_to_cpu(predictor(path)), device)
            if run >= warmup:
                end_to_end.append(seconds)
    return {
        "network_modules": network.names,
        "model_forward": summarize(forward),
        "post_processing": summarize(post),
        "model_call": summarize(call),
        "end_to_end": summarize(end_to_end),
        "peak_memory_mib": peak,
    }


def build_optimizer(cfg: Any, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The config's optimizer (``optimizer.params.model`` filled in), else AdamW(lr=1e-4)."""
    from omegaconf import DictConfig

    from detrex_ext.config import instantiate

    optimizer_cfg = cfg.get("optimizer") if isinstance(cfg, DictConfig) else None
    if optimizer_cfg is None:
        logger.warning("the config has no optimizer; using AdamW(lr=1e-4)")
        return torch.optim.AdamW(model.parameters(), lr=1e-4)
    params = optimizer_cfg.get("params")
    if isinstance(params, DictConfig) and "model" in params:
        params.model = model
        return instantiate(optimizer_cfg)
    optimizer_cfg.params = [p for p in model.parameters() if p.requires_grad]
    return instantiate(optimizer_cfg)


def benchmark_training(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: list[dict[str, Any]],
    *,
    amp: str | None,
    warmup: int,
    repeats: int,
) -> dict[str, Any]:
    """Median time of one forward + backward + optimizer step, and peak memory."""
    device = next(model.parameters()).device
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    autocast = (
        torch.autocast(device.type, dtype=AMP_DTYPES[amp]) if amp else contextlib.nullcontext()
    )
    model.train()

    def step() -> float:
        with autocast:
            losses = model(batch)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return float(loss.detach())

    times, loss = [], float("nan")
    for run in range(warmup + repeats):
        if run == warmup:
            _reset_peak_memory(device)
        seconds, loss = timed(step, device)
        if run >= warmup:
            times.append(seconds)
    return {
        "step": summarize(times, images_per_run=len(batch)),
        "batch_size": len(batch),
        "image_size": list(batch[0]["image"].shape[-2:]),
        "last_loss": loss,
        "peak_memory_mib": peak_memory_mib(device),
    }


# ----------------------------------------------------------------------------- report


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def format_table(results: dict[str, Any]) -> str:
    rows = []
    inference = results.get("inference")
    if inference:
        size = "x".join(str(v) for v in results["inference_size"])
        labels = {
            "model_forward": f"model forward ({'+'.join(inference['network_modules'])})",
            "post_processing": "post-processing",
            "model_call": "model call (forward + post)",
            "end_to_end": "end-to-end (file -> outputs on CPU)",
        }
        for key, label in labels.items():
            s = inference[key]
            rows.append(
                [
                    f"{label}, batch 1 @ {size}",
                    s["median_ms"],
                    s["mean_ms"],
                    s["min_ms"],
                    s["images_per_s"],
                ]
            )
    training = results.get("training")
    if training:
        s = training["step"]
        size = "x".join(str(v) for v in training["image_size"])
        rows.append(
            [
                f"training step, batch {training['batch_size']} @ {size}",
                s["median_ms"],
                s["mean_ms"],
                s["min_ms"],
                s["images_per_s"],
            ]
        )
    table = tabulate(
        rows, headers=["stage", "median ms", "mean ms", "min ms", "images/s"], floatfmt=".1f"
    )
    memory_kind = (
        "CUDA peak allocated" if results["device"].startswith("cuda") else "process peak RSS"
    )
    lines = [
        f"{results['config']} | {results['device_name']} | amp {results['amp'] or 'off'} | "
        f"{results['parameters'] / 1e6:.2f}M parameters | torch {results['torch']}",
        table,
    ]
    if inference:
        lines.append(f"inference memory ({memory_kind}): {inference['peak_memory_mib']:.0f} MiB")
    if training:
        lines.append(f"training memory ({memory_kind}): {training['peak_memory_mib']:.0f} MiB")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(
        parser, weights="checkpoint (path, URL or model name); default: random init"
    )
    parser.add_argument("--amp", choices=sorted(AMP_DTYPES), default=None, help="autocast dtype")
    parser.add_argument("--height", type=int, default=800, help="inference image height")
    parser.add_argument("--width", type=int, default=1216, help="inference image width")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before measuring")
    parser.add_argument(
        "--repeats", type=int, default=10, help="timed runs (the median is reported)"
    )
    parser.add_argument("--train-batch", type=int, default=2, help="images per training step")
    parser.add_argument("--train-size", type=int, default=1024, help="training image side length")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--msda-backend", choices=["auto", "pytorch", "triton"], default=None)
    parser.add_argument(
        "--output", type=Path, default=Path("benchmark.json"), help="JSON results file"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.msda_backend:
        from detrex_ext.layers import set_msda_backend

        set_msda_backend(args.msda_backend)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = load_config(args.config_file, args.opts)
    weights = args.weights or released_model_name(args.config_file)
    model = build_model(cfg, weights, device)
    results: dict[str, Any] = {
        "config": args.config_file,
        "overrides": args.opts,
        "weights": weights,
        "device": str(device),
        "device_name": device_description(device),
        "amp": args.amp,
        "torch": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "inference_size": [args.height, args.width],
    }
    if not args.skip_inference:
        predictor = Predictor(model, amp=args.amp)  # no resize: the image already has the size
        image = synthetic_image(args.height, args.width)
        results["inference"] = benchmark_inference(
            predictor, image, warmup=args.warmup, repeats=args.repeats
        )
    if not args.skip_training:
        from detrex_ext.config import try_get_key

        num_classes = int(
            try_get_key(cfg, "model.num_classes", "model.sem_seg_head.num_classes", default=2)
        )
        batch = synthetic_training_batch(args.train_batch, args.train_size, num_classes)
        optimizer = build_optimizer(cfg, model)
        results["training"] = benchmark_training(
            model, optimizer, batch, amp=args.amp, warmup=max(1, args.warmup), repeats=args.repeats
        )
    print(format_table(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
