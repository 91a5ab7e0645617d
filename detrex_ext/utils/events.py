"""``EventStorage``: the per-run store of scalar metrics (and images) that writers read.

The trainer opens one storage for the whole run; losses, timings, learning rate and evaluation
results are put into it with the iteration they belong to, and the writers (console, JSON,
TensorBoard, wandb) read the values that are new since their last write. Same API as detectron2's
``EventStorage`` for the parts models and hooks use.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import torch
from fvcore.common.history_buffer import HistoryBuffer

__all__ = ["EventStorage", "get_event_storage", "has_event_storage"]

# detectron2 keeps its writers in utils.events; ours live in utils.writers (which imports this
# module), so these names resolve on first access
_WRITERS = ("EventWriter", "CommonMetricPrinter", "JSONWriter", "TensorboardXWriter")


def __getattr__(name: str):
    if name in _WRITERS:
        from . import writers

        return getattr(writers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_CURRENT_STORAGE_STACK: list[EventStorage] = []


def get_event_storage() -> EventStorage:
    """The innermost ``EventStorage`` in use (the trainer's during training).

    Raises:
        RuntimeError: when called outside ``with EventStorage(...)``.
    """
    if not _CURRENT_STORAGE_STACK:
        raise RuntimeError(
            "get_event_storage() has to be called inside a 'with EventStorage(...)' context "
            "(the trainer opens one around training)."
        )
    return _CURRENT_STORAGE_STACK[-1]


def has_event_storage() -> bool:
    """Whether an ``EventStorage`` is in use (``get_event_storage()`` would succeed)."""
    return bool(_CURRENT_STORAGE_STACK)


class EventStorage:
    """Scalar histories keyed by name, plus images for TensorBoard.

    Args:
        start_iter: iteration that ``put_scalar`` records by default until ``iter`` is set.
    """

    def __init__(self, start_iter: int = 0) -> None:
        self._history: defaultdict[str, HistoryBuffer] = defaultdict(HistoryBuffer)
        self._smoothing_hints: dict[str, bool] = {}
        self._latest_scalars: dict[str, tuple[float, int]] = {}
        self._iter = start_iter
        self._current_prefix = ""
        self._vis_data: list[tuple[str, torch.Tensor, int]] = []

    def put_scalar(
        self, name: str, value: Any, smoothing_hint: bool = True, cur_iter: int | None = None
    ) -> None:
        """Record ``value`` under ``name``.

        Args:
            name: metric name (the current ``name_scope`` prefix is prepended).
            value: a number or a one-element tensor.
            smoothing_hint: whether writers may show a windowed median instead of the latest
                value (True for noisy per-iteration losses, False for evaluation results).
            cur_iter: iteration to record; defaults to ``self.iter``.
        """
        name = self._current_prefix + name
        cur_iter = self._iter if cur_iter is None else int(cur_iter)
        value = float(value)
        self._history[name].update(value, cur_iter)
        self._latest_scalars[name] = (value, cur_iter)
        previous_hint = self._smoothing_hints.setdefault(name, smoothing_hint)
        if previous_hint != smoothing_hint:
            raise ValueError(f"Scalar {name!r} was put with smoothing_hint={previous_hint} before")

    def put_scalars(
        self, *, smoothing_hint: bool = True, cur_iter: int | None = None, **kwargs: Any
    ) -> None:
        """``put_scalar`` for every keyword argument."""
        for name, value in kwargs.items():
            self.put_scalar(name, value, smoothing_hint=smoothing_hint, cur_iter=cur_iter)

    def put_image(self, img_name: str, img_tensor: torch.Tensor) -> None:
        """Queue an image ``[3, H, W]`` float in [0, 1] (or uint8) for the TensorBoard writer."""
        self._vis_data.append((img_name, img_tensor, self._iter))

    def clear_images(self) -> None:
        """Drop queued images (the TensorBoard writer calls this after writing them)."""
        self._vis_data = []

    @property
    def vis_data(self) -> list[tuple[str, torch.Tensor, int]]:
        return self._vis_data

    def history(self, name: str) -> HistoryBuffer:
        """The ``HistoryBuffer`` of ``name``; raises ``KeyError`` naming the known metrics."""
        if name not in self._history:
            raise KeyError(f"No history metric {name!r}; known: {sorted(self._history)}")
        return self._history[name]

    def histories(self) -> dict[str, HistoryBuffer]:
        return dict(self._history)

    def latest(self) -> dict[str, tuple[float, int]]:
        """``name -> (latest value, iteration it was recorded at)``."""
        return dict(self._latest_scalars)

    def latest_with_smoothing_hint(self, window_size: int = 20) -> dict[str, tuple[float, int]]:
        """Like ``latest`` but smoothed metrics give the median of the values recorded in their
        last ``window_size`` iterations (``count_samples``), so a scalar put every k-th
        iteration is smoothed over ``window_size / k`` values, not over ``window_size``."""
        result = {}
        for name, (value, itr) in self._latest_scalars.items():
            if self._smoothing_hints[name]:
                value = self._history[name].median(self.count_samples(name, window_size))
            result[name] = (value, itr)
        return result

    def count_samples(self, name: str, window_size: int = 20) -> int:
        """How many values of ``name`` were recorded in the ``window_size`` iterations ending at
        its latest one (iterations ``> latest - window_size``)."""
        values = self._history[name].values() if name in self._history else []
        if not values:
            return 0
        last_iter = values[-1][1]
        count = 0
        for _, itr in reversed(values):
            if itr <= last_iter - window_size:
                break
            count += 1
        return count

    def smoothing_hints(self) -> dict[str, bool]:
        return dict(self._smoothing_hints)

    def history_state(self, max_length: int = 100) -> dict[str, list[list[float]]]:
        """The last ``max_length`` ``[value, iteration]`` pairs of every smoothed scalar, for a
        checkpoint: restored with ``load_history_state``, windowed medians after a resume equal
        those of an uninterrupted run."""
        return {
            name: [[float(v), float(i)] for v, i in self._history[name].values()[-max_length:]]
            for name, smoothed in self._smoothing_hints.items()
            if smoothed
        }

    def load_history_state(self, state: dict[str, list[list[float]]]) -> None:
        """Prepend saved histories (``history_state``); they do not count as new values for the
        writers."""
        for name, values in state.items():
            buffer = HistoryBuffer()
            for value, itr in values:
                buffer.update(value, itr)
            for value, itr in self._history[name].values() if name in self._history else []:
                buffer.update(value, itr)
            self._history[name] = buffer
            self._smoothing_hints.setdefault(name, True)

    def step(self) -> None:
        """Advance ``iter`` by one (for loops that do not set ``storage.iter`` themselves)."""
        self._iter += 1

    @property
    def iteration(self) -> int:
        """Alias of ``iter`` (detectron2's older name)."""
        return self._iter

    @property
    def iter(self) -> int:
        """The iteration new scalars are recorded at (the trainer sets it every step)."""
        return self._iter

    @iter.setter
    def iter(self, value: int) -> None:
        self._iter = int(value)

    @contextlib.contextmanager
    def name_scope(self, name: str) -> Iterator[None]:
        """Prefix scalar names put inside the block with ``name/``."""
        old_prefix = self._current_prefix
        self._current_prefix = name.rstrip("/") + "/"
        try:
            yield
        finally:
            self._current_prefix = old_prefix

    def __enter__(self) -> EventStorage:
        _CURRENT_STORAGE_STACK.append(self)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        assert _CURRENT_STORAGE_STACK[-1] is self
        _CURRENT_STORAGE_STACK.pop()
