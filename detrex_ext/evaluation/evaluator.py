"""The evaluator protocol (``reset`` / ``process`` / ``evaluate``) and ``inference_on_dataset``."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import MutableSequence
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn
from tqdm import tqdm

from detrex_ext.utils import comm

logger = logging.getLogger(__name__)


class DatasetEvaluator:
    """Base class of evaluators: accumulate predictions batch by batch, then score them.

    ``inference_on_dataset`` calls ``reset()`` once, ``process(inputs, outputs)`` after every
    batch (``inputs`` is the model's input ``list[dict]``, ``outputs`` its ``list[dict]``), and
    ``evaluate()`` at the end. ``evaluate`` returns ``{task: {metric: value}}`` (percentages), or
    ``None``/``{}`` on processes other than the main one in distributed runs.
    """

    def reset(self) -> None:
        """Prepare for a new round of evaluation."""

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """Record one batch of inputs and the model's outputs for them."""

    def evaluate(self) -> dict[str, Any] | None:
        """Score everything processed since the last ``reset``."""
        return None


class DatasetEvaluators(DatasetEvaluator):
    """Run several evaluators as one; their result dicts are merged (task keys must differ)."""

    def __init__(self, evaluators: Iterable[DatasetEvaluator]):
        super().__init__()
        self._evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for evaluator in self._evaluators:
            result = evaluator.evaluate()
            if not comm.is_main_process() or not result:
                continue
            for task, value in result.items():
                if task in results:
                    raise KeyError(
                        f"Two evaluators produced results for the same task {task!r}; give "
                        "each evaluator a distinct task"
                    )
                results[task] = value
        return results


@contextmanager
def inference_context(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the duration of the block, then restore its mode."""
    training_mode = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training_mode)


def inference_on_dataset(
    model: Callable[[Any], Any],
    data_loader: Iterable,
    evaluator: DatasetEvaluator | list[DatasetEvaluator] | None,
    callbacks: dict[str, Callable[[], None]] | None = None,
) -> dict[str, Any]:
    """Run ``model`` on every batch of ``data_loader`` and score the outputs with ``evaluator``.

    An ``nn.Module`` is switched to eval mode for the run (and back afterwards); everything runs
    under ``torch.no_grad()``. A tqdm progress bar (main process only) shows the speed, and the
    total and pure-compute times are logged, excluding up to 5 warm-up batches.

    Args:
        model: a callable taking one batch (``list[dict]``) and returning ``list[dict]``.
        data_loader: an iterable of batches; ``len()`` is used for the progress bar if available.
        evaluator: one evaluator, a list of them, or None to only time the model.
        callbacks: optional ``{"on_start", "before_inference", "after_inference", "on_end"}``
            functions taking no argument.

    Returns:
        ``evaluator.evaluate()``, or ``{}`` when it returns None (e.g. on non-main processes).
    """
    callbacks = callbacks or {}
    unknown = set(callbacks) - {"on_start", "before_inference", "after_inference", "on_end"}
    if unknown:
        raise KeyError(
            f"unknown callbacks {sorted(unknown)}; use on_start, before_inference, "
            "after_inference or on_end"
        )
    if evaluator is None:
        evaluator = DatasetEvaluators([])
    elif isinstance(evaluator, MutableSequence):
        evaluator = DatasetEvaluators(evaluator)
    evaluator.reset()

    total = len(data_loader) if hasattr(data_loader, "__len__") else None
    logger.info("Start inference on %s batches", total if total is not None else "?")
    num_warmup = min(5, total - 1) if total else 5
    timings = {"data": 0.0, "compute": 0.0, "eval": 0.0}
    start_time = time.perf_counter()
    num_batches = 0
    with ExitStack() as stack:
        if isinstance(model, nn.Module):
            stack.enter_context(inference_context(model))
        stack.enter_context(torch.no_grad())
        progress = stack.enter_context(
            tqdm(
                total=total,
                desc="inference",
                unit="batch",
                disable=not comm.is_main_process(),
                dynamic_ncols=True,
                leave=False,
            )
        )
        _call(callbacks, "on_start")
        data_start = time.perf_counter()
        for idx, inputs in enumerate(data_loader):
            timings["data"] += time.perf_counter() - data_start
            if idx == num_warmup:
                start_time = time.perf_counter()
                timings = dict.fromkeys(timings, 0.0)
            compute_start = time.perf_counter()
            _call(callbacks, "before_inference")
            outputs = model(inputs)
            _call(callbacks, "after_inference")
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()
            timings["compute"] += time.perf_counter() - compute_start
            eval_start = time.perf_counter()
            evaluator.process(inputs, outputs)
            timings["eval"] += time.perf_counter() - eval_start
            num_batches = idx + 1
            timed = num_batches - num_warmup if idx >= num_warmup else num_batches
            progress.set_postfix(
                data=f"{timings['data'] / timed:.3f}s",
                model=f"{timings['compute'] / timed:.3f}s",
                eval=f"{timings['eval'] / timed:.3f}s",
                refresh=False,
            )
            progress.update(1)
            data_start = time.perf_counter()
        _call(callbacks, "on_end")

    timed_batches = num_batches - num_warmup if num_batches > num_warmup else max(num_batches, 1)
    total_time = time.perf_counter() - start_time
    logger.info(
        "Total inference time: %s (%.6f s / iter per device, on %d devices)",
        datetime.timedelta(seconds=int(total_time)),
        total_time / timed_batches,
        comm.get_world_size(),
    )
    logger.info(
        "Total inference pure compute time: %s (%.6f s / iter per device, on %d devices)",
        datetime.timedelta(seconds=int(timings["compute"])),
        timings["compute"] / timed_batches,
        comm.get_world_size(),
    )
    results = evaluator.evaluate()
    return results if results is not None else {}


def _call(callbacks: dict[str, Callable[[], None]], name: str) -> None:
    fn = callbacks.get(name)
    if fn is not None:
        fn()
