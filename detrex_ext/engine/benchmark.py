"""Timing helpers for benchmarks: device-synchronised timers, the compute / post-processing split
of a model call, the forward / backward / optimizer split of a ``Trainer`` step, peak memory.

Used by ``tools/benchmark.py`` (see its docstring for the recipe); usable from a notebook::

    from detrex_ext.engine.benchmark import benchmark_inference, benchmark_training

Timings are wall-clock seconds (``time.perf_counter``) with the CUDA device synchronised around
each timed region, so they hold for asynchronous CUDA execution; on CPU no synchronisation is
needed. Figures are reported as medians over the timed runs.
"""

from __future__ import annotations

import gc
import itertools
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from detrex_ext.utils.events import EventStorage

from .predictor import Predictor
from .train_loop import HookBase, Trainer

__all__ = [
    "timed",
    "summarize",
    "NetworkTimer",
    "TrainingPhaseTimer",
    "peak_memory_mib",
    "release_memory",
    "benchmark_inference",
    "benchmark_training",
]

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
    """Median/mean/min/max in milliseconds, images per second at the median, number of runs."""
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


class TrainingPhaseTimer(HookBase):
    """Splits ``Trainer.run_step`` into forward / backward / optimizer seconds.

    Marks (device synchronised, then the clock read) at the step's start, when the model returns
    its losses (a forward hook), at the trainer's ``after_backward`` and at the step's end. Only
    :meth:`measure` sets marks: other steps run without these synchronisations.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.device = device
        self._marks: list[float] | None = None
        self._handle = model.register_forward_hook(self._mark_if_measuring)

    def _mark(self) -> None:
        _synchronize(self.device)
        self._marks.append(time.perf_counter())

    def _mark_if_measuring(self, *_: Any) -> None:
        if self._marks is not None:
            self._mark()

    def after_backward(self) -> None:
        self._mark_if_measuring()

    def measure(self, run_step: Callable[[], None]) -> tuple[float, float, float]:
        """Run one step; returns its (forward incl. losses, backward, optimizer) seconds."""
        self._marks = []
        try:
            self._mark()
            run_step()
            self._mark()
            start, forward_end, backward_end, end = self._marks
        finally:
            self._marks = None
        return forward_end - start, backward_end - forward_end, end - backward_end

    def remove(self) -> None:
        self._handle.remove()


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
    """CUDA allocator peak since the last reset; on CPU the process's lifetime peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def release_memory(model: torch.nn.Module, device: torch.device) -> None:
    """Free gradients and cached blocks so the next stage's peak memory starts clean."""
    model.zero_grad(set_to_none=True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- benchmarks


def _timed_runs(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list:
    times = []
    for run in range(warmup + repeats):
        seconds, _ = timed(fn, device)
        if run >= warmup:
            times.append(seconds)
    return times


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
    end_to_end = _timed_runs(lambda: predictor(image), device, warmup, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "image.jpg")
        Image.fromarray(image).save(path, quality=95)
        from_file = _timed_runs(lambda: outputs_to_cpu(predictor(path)), device, warmup, repeats)
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
