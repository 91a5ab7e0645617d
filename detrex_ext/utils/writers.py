"""Event writers: console line with ETA, ``metrics.json``, TensorBoard and wandb.

Each writer reads the current ``EventStorage`` in ``write()`` and outputs what is new since its
previous call. TensorBoard and wandb are imported only when their writer is built, with an
actionable error when the package is missing.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from collections import defaultdict
from typing import Any

import torch

from .events import get_event_storage
from .file_io import PathManager

__all__ = [
    "EventWriter",
    "CommonMetricPrinter",
    "JSONWriter",
    "TensorboardXWriter",
    "WandbWriter",
    "new_scalars_since",
]

logger = logging.getLogger(__name__)


class EventWriter:
    """Base class: ``write()`` is called periodically, ``close()`` once at the end."""

    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def new_scalars_since(written: dict[str, int], window_size: int) -> dict[int, dict[str, float]]:
    """Scalars not written yet, grouped by iteration (smoothed where hinted), marked as written.

    Args:
        written: name -> last iteration already written for that name; updated in place. Tracking
            each name (not one iteration for all) means a value put later for an iteration that
            was already written (evaluation results after a flush before a checkpoint) still
            goes out.
        window_size: smoothing window of the hinted scalars.
    """
    grouped: dict[int, dict[str, float]] = defaultdict(dict)
    for name, (value, itr) in get_event_storage().latest_with_smoothing_hint(window_size).items():
        if itr > written.get(name, -1):
            grouped[itr][name] = value
            written[name] = itr
    return dict(grouped)


class CommonMetricPrinter(EventWriter):
    """Log one line per call: ETA, iteration, losses, ``[metric]`` scalars, timings, learning
    rate, peak GPU memory.

    Args:
        max_iter: training length, for the ETA.
        window_size: losses and timings are medians/averages over this many iterations.
    """

    def __init__(self, max_iter: int | None = None, window_size: int = 20) -> None:
        self._max_iter = max_iter
        self._window_size = window_size
        self._last_write: tuple[int, float] | None = None  # (iteration, wall time)
        self._printed_iteration: int | None = None

    def _eta_seconds(self, iteration: int) -> float | None:
        storage = get_event_storage()
        if self._max_iter is None:
            return None
        try:
            seconds_per_iter = storage.history("time").median(1000)
        except KeyError:
            seconds_per_iter = None
        if seconds_per_iter is not None:
            eta = seconds_per_iter * (self._max_iter - iteration - 1)
            storage.put_scalar("eta_seconds", eta, smoothing_hint=False)
            return eta
        # no iteration timer (or still warming up): estimate from the time between two writes
        eta = None
        if self._last_write is not None:
            last_iter, last_time = self._last_write
            if iteration > last_iter:
                per_iter = (time.perf_counter() - last_time) / (iteration - last_iter)
                eta = per_iter * (self._max_iter - iteration - 1)
        self._last_write = (iteration, time.perf_counter())
        return eta

    def write(self) -> None:
        storage = get_event_storage()
        iteration = storage.iter
        if self._max_iter is not None and iteration == self._max_iter:
            # after training finished: this writer reports training progress only
            return
        if iteration == self._printed_iteration:  # flushed already (before a checkpoint)
            return
        self._printed_iteration = iteration
        histories = storage.histories()

        def windowed(name: str, how: str = "avg") -> float | None:
            # over the values recorded in the last window_size iterations (sparse scalars too)
            if name not in histories:
                return None
            buffer = histories[name]
            count = storage.count_samples(name, self._window_size)
            return buffer.median(count) if how == "median" else buffer.avg(count)

        eta = self._eta_seconds(iteration)
        parts = []
        if eta is not None:
            parts.append(f"eta: {datetime.timedelta(seconds=int(eta))}")
        parts.append(f"iter: {iteration}")
        latest = storage.latest()
        for name in sorted(histories):
            if "loss" in name and latest[name][1] == iteration:
                parts.append(f"{name}: {windowed(name, 'median'):.4g}")
        for name in sorted(histories):
            if "[metric]" in name:
                parts.append(f"{name}: {windowed(name, 'median'):.4g}")
        if "grad_norm" in histories:
            parts.append(f"grad_norm: {windowed('grad_norm', 'median'):.4g}")
        for name in ("time", "data_time"):
            if name in histories:
                parts.append(f"{name}: {windowed(name):.4f}")
                parts.append(f"last_{name}: {histories[name].latest():.4f}")
        if "lr" in histories:
            parts.append(f"lr: {histories['lr'].latest():.5g}")
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            parts.append(f"max_mem: {torch.cuda.max_memory_allocated() / 2**20:.0f}M")
        logger.info(" " + "  ".join(parts))


class JSONWriter(EventWriter):
    """Append one JSON object per iteration to ``json_file``: ``{"iteration": i, name: value}``.

    Values put for an iteration after its line went out (evaluation results, when the writers
    were flushed before a checkpoint) get a second line for that iteration. After a resume the
    file is appended to, so iterations between the last checkpoint and the crash appear twice;
    the later line is the one of the finished run.
    """

    def __init__(self, json_file: str, window_size: int = 20) -> None:
        self._file = PathManager.open(json_file, "a")
        self._window_size = window_size
        self._written: dict[str, int] = {}

    def write(self) -> None:
        grouped = new_scalars_since(self._written, self._window_size)
        for itr in sorted(grouped):
            record = {"iteration": itr, **grouped[itr]}
            self._file.write(json.dumps(record, sort_keys=True) + "\n")
        if grouped:
            self._file.flush()
            try:
                os.fsync(self._file.fileno())
            except (AttributeError, OSError):  # non-local file objects have no fileno
                pass

    def close(self) -> None:
        self._file.close()


class TensorboardXWriter(EventWriter):
    """Scalars (and queued images) to TensorBoard event files in ``log_dir``."""

    def __init__(self, log_dir: str, window_size: int = 20, **kwargs: Any) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError(
                "TensorboardXWriter needs the 'tensorboard' package: pip install tensorboard"
            ) from e
        self._writer = SummaryWriter(log_dir, **kwargs)
        self._window_size = window_size
        self._written: dict[str, int] = {}

    def write(self) -> None:
        grouped = new_scalars_since(self._written, self._window_size)
        for itr in sorted(grouped):
            for name, value in grouped[itr].items():
                self._writer.add_scalar(name, value, itr)
        storage = get_event_storage()
        for name, image, itr in storage.vis_data:
            self._writer.add_image(name, image, itr)
        storage.clear_images()
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbWriter(EventWriter):
    """Scalars to Weights & Biases.

    Args:
        config: a plain dict logged as the run config (the resolved lazy config).
        window_size: smoothing window, as for the other writers.
        init_kwargs: passed to ``wandb.init`` (``project``, ``name``, ``dir``, ``mode``...).
            ``mode="offline"`` (or ``WANDB_MODE=offline``) writes the run locally without network;
            upload it later with ``wandb sync``.
    """

    def __init__(
        self, config: dict | None = None, window_size: int = 20, **init_kwargs: Any
    ) -> None:
        try:
            import wandb
        except ImportError as e:
            raise ImportError(
                "train.wandb.enabled=True needs the 'wandb' package: pip install wandb "
                "(or set train.wandb.enabled=False)"
            ) from e
        if init_kwargs.get("dir"):
            os.makedirs(init_kwargs["dir"], exist_ok=True)
        self._wandb = wandb
        self._run = wandb.init(config=config, **init_kwargs)
        self._window_size = window_size
        self._written: dict[str, int] = {}

    def write(self) -> None:
        grouped = new_scalars_since(self._written, self._window_size)
        for itr in sorted(grouped):
            self._run.log(grouped[itr], step=itr)

    def close(self) -> None:
        self._run.finish()
