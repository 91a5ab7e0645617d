"""Inference and training-step benchmarks of a model (see ``tools/benchmark.py`` for the recipe).

Usable from a notebook::

    from detrex_ext.engine.benchmark import benchmark_inference, benchmark_training
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from detrex_ext.utils.events import EventStorage

from ..predictor import Predictor
from ..train_loop import Trainer
from .timing import (
    NetworkTimer,
    TrainingPhaseTimer,
    _reset_peak_memory,
    outputs_to_cpu,
    peak_memory_mib,
    summarize,
    time_runs,
    timed,
)

__all__ = ["benchmark_inference", "benchmark_training"]


def benchmark_inference(
    predictor: Predictor, image: np.ndarray, *, warmup: int, repeats: int
) -> dict[str, Any]:
    """Compute-only and post-processing split of the model call, then end to end (in memory and
    from a JPEG file). ``image``: HWC uint8 RGB."""
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
    end_to_end, _ = time_runs(lambda: predictor(image), device, warmup, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "image.jpg")
        Image.fromarray(image).save(path, quality=95)
        from_file, _ = time_runs(lambda: outputs_to_cpu(predictor(path)), device, warmup, repeats)
    return {
        "network_modules": network.names,
        "compute_only": summarize(forward),
        "post_processing": summarize(post),
        "model_call": summarize(call),
        "end_to_end": summarize(end_to_end),
        "end_to_end_from_file": summarize(from_file),
        "peak_memory_mib": peak,
    }


def benchmark_training(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: list[dict[str, Any]],
    *,
    precision: str = "fp32",
    clip_grad: dict[str, Any] | None = None,
    warmup: int,
    repeats: int,
) -> dict[str, Any]:
    """Time ``Trainer.run_step`` (the launcher's step) on one fixed ``batch``.

    ``precision``: ``"fp32"`` (no autocast), ``"bf16"`` (autocast, no loss scaling) or ``"fp16"``
    (autocast and a GradScaler), as ``train.amp``. ``clip_grad``: kwargs of
    ``clip_grad_norm_`` over all parameters (``train.clip_grad.params``), or None.

    Each of the ``warmup + repeats`` runs makes two steps: a whole step timed with the device
    synchronised only before and after it (``step``), then a step split by
    :class:`TrainingPhaseTimer` into ``forward`` (incl. losses), ``backward`` and ``optimizer``
    (incl. unscaling and clipping), synchronised at every phase boundary. Those extra
    synchronisations keep the host from queueing the next phase while the device works, so the
    split's sum is slightly larger than an unsynchronised step. The trainer's sum of the losses and
    its finite-value check (tiny kernels and one synchronisation) fall into ``backward``.

    Returns:
        ``step``/``forward``/``backward``/``optimizer``: :func:`summarize` of the timed runs
        (``step`` with images per second); ``split_sum_ms``: sum of the three medians;
        ``last_loss``, ``last_grad_norm`` (None without clipping); ``grad_scaler``;
        ``peak_memory_mib`` over the timed runs (see :func:`peak_memory_mib`).
    """
    device = next(model.parameters()).device
    trainer = Trainer(
        model,
        itertools.repeat(batch),
        optimizer,
        amp_enabled=precision != "fp32",
        amp_dtype=precision if precision != "fp32" else "bf16",
        clip_grad_params=clip_grad,
    )
    phases = TrainingPhaseTimer(model, device)
    trainer.register_hooks([phases])
    steps: list[float] = []
    split: list[tuple[float, float, float]] = []
    try:
        with EventStorage(0) as trainer.storage:
            for run in range(warmup + repeats):
                if run == warmup:
                    _reset_peak_memory(device)
                trainer.iter = trainer.storage.iter = run
                seconds, _ = timed(trainer.run_step, device)
                phase_seconds = phases.measure(trainer.run_step)
                if run >= warmup:
                    steps.append(seconds)
                    split.append(phase_seconds)
            latest = trainer.storage.latest()
    finally:
        phases.remove()
    forward, backward, optimizer_step = (summarize(list(s)) for s in zip(*split))
    return {
        "step": summarize(steps, images_per_run=len(batch)),
        "forward": forward,
        "backward": backward,
        "optimizer": optimizer_step,
        "split_sum_ms": forward["median_ms"] + backward["median_ms"] + optimizer_step["median_ms"],
        "last_loss": latest["total_loss"][0],
        "last_grad_norm": latest["grad_norm"][0] if "grad_norm" in latest else None,
        "grad_scaler": trainer.grad_scaler is not None,
        "peak_memory_mib": peak_memory_mib(device),
    }
