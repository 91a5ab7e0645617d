"""``BestCheckpointer``: save the weights with the best value of an evaluation metric
(detectron2's hook; exported from ``detrex_ext.engine.hooks``)."""

from __future__ import annotations

import logging
import math
import operator
from typing import Any

from .train_loop import HookBase

__all__ = ["BestCheckpointer"]

logger = logging.getLogger(__name__)


class BestCheckpointer(HookBase):
    """After each evaluation, save ``<file_prefix>.pth`` when ``val_metric`` improved.

    Register it after the ``EvalHook`` that puts the metric; it checks at the same iterations:
    every ``eval_period`` (not on the last iteration) and after training. NaN / inf values never
    count as best. The checkpoint holds the trainer state like a periodic one and, like every
    save, points ``last_checkpoint`` at itself.

    Args:
        eval_period: the ``EvalHook``'s period.
        checkpointer: the run's checkpointer (``save(name, **extra)``).
        val_metric: the storage name of the metric, e.g. ``"bbox/AP50"``.
        mode: ``"max"`` (higher is better) or ``"min"``.
        file_prefix: checkpoint file name without ``.pth``.
    """

    def __init__(
        self,
        eval_period: int,
        checkpointer: Any,
        val_metric: str,
        mode: str = "max",
        file_prefix: str = "model_best",
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"BestCheckpointer mode must be 'max' or 'min', got {mode!r}")
        self._period = eval_period
        self._val_metric = val_metric
        self._compare = operator.gt if mode == "max" else operator.lt
        self._checkpointer = checkpointer
        self._file_prefix = file_prefix
        self.best_metric: float | None = None
        self.best_iter: int | None = None

    def _best_checking(self) -> None:
        found = self.trainer.storage.latest().get(self._val_metric)
        if found is None:
            logger.warning(
                f"Metric {self._val_metric!r} was not put in the event storage: no best "
                "checkpoint is saved (is the evaluation hook registered before this one, and "
                "is the name as in metrics.json?)"
            )
            return
        value, metric_iter = found
        if math.isnan(value) or math.isinf(value):
            logger.info(f"{self._val_metric} = {value} is not a number; not saved as best.")
            return
        if self.best_metric is not None and not self._compare(value, self.best_metric):
            logger.info(
                f"Not saving: {self._val_metric} = {value:0.5f} is not better than the best "
                f"{self.best_metric:0.5f} @ iteration {self.best_iter}."
            )
            return
        previous = self.best_metric
        self._checkpointer.save(self._file_prefix, iteration=metric_iter)
        self.best_metric, self.best_iter = value, metric_iter
        if previous is None:
            logger.info(f"Saved first model at {value:0.5f} @ {metric_iter} steps")
        else:
            logger.info(
                f"Saved best model: {self._val_metric} = {value:0.5f}, better than {previous:0.5f}"
            )

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if (
            self._period > 0
            and next_iter % self._period == 0
            and next_iter != self.trainer.max_iter
        ):
            self._best_checking()

    def after_train(self) -> None:
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            self._best_checking()
