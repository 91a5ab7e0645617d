"""Timing primitives of the benchmarks: device-synchronised timers, medians, the compute /
post-processing split of a model call, the forward / backward / optimizer split of a ``Trainer``
step, side-by-side alternation of several callables, peak memory.

Timings are wall-clock seconds (``time.perf_counter``) with the CUDA device synchronised around
each timed region, so they hold for asynchronous CUDA execution; on CPU no synchronisation is
needed. Figures are reported as medians over the timed runs.
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..train_loop import HookBase

__all__ = [
    "NetworkTimer",
    "TrainingPhaseTimer",
    "alternate",
    "load_average",
    "outputs_to_cpu",
    "peak_memory_mib",
    "release_memory",
    "summarize",
    "time_runs",
    "timed",
]


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


def time_runs(
    fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int
) -> tuple[list[float], Any]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones, and the last
    call's result. ``fn`` is any callable: a model call, a Predictor, an exported program, an
    ONNX Runtime session, ..."""
    times, result = [], None
    for run in range(warmup + repeats):
        seconds, result = timed(fn, device)
        if run >= warmup:
            times.append(seconds)
    return times, result


def alternate(
    candidates: Mapping[str, Callable[[], Any]],
    device: torch.device,
    warmup: int,
    repeats: int,
    on_round: Callable[[int, str, float], None] | None = None,
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Time several callables side by side: each round calls every candidate once, in the given
    order, so a change of machine load affects them alike (compare medians and per-round
    ratios, not single runs). ``on_round(round, name, seconds)`` is called after every call.

    Returns:
        seconds of the ``repeats`` timed calls per candidate, and each candidate's last result.
    """
    times: dict[str, list[float]] = {name: [] for name in candidates}
    results: dict[str, Any] = {}
    for run in range(warmup + repeats):
        for name, fn in candidates.items():
            seconds, results[name] = timed(fn, device)
            if run >= warmup:
                times[name].append(seconds)
            if on_round is not None:
                on_round(run, name, seconds)
    return times, results


def load_average() -> list[float] | None:
    """The machine's 1/5/15-minute load averages (None where the OS has none): timings on a
    shared machine vary with it."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None
