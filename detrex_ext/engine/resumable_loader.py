"""Make a config-built train loader resumable at the exact batch where training stopped.

The trainer checkpoints its loader's ``state_dict()`` and restores it with ``load_state_dict()``
before the first batch is drawn. A loader object that implements both is used as it is. A loader
*builder* that takes ``start_iter`` (``build_detection_train_loader``) is wrapped in
``ResumableLoader``, which counts the batches handed out and, on resume, builds the loader with
``start_iter`` = that count, so the sampler skips exactly the consumed batches. When the builder
also takes ``seed`` and the config leaves it None, the wrapper fixes it (and checkpoints it):
otherwise a resumed run would draw a new random data order and new augmentations.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from omegaconf import DictConfig

from detrex_ext.config import instantiate, locate
from detrex_ext.utils.env import preserved_random_state

__all__ = ["ResumableLoader", "build_train_loader"]

logger = logging.getLogger(__name__)


class ResumableLoader:
    """Builds its loader on first iteration, at ``batches_consumed``.

    Args:
        loader_cfg: LazyCall config of a builder accepting ``start_iter`` (batches of this
            process to skip) and, optionally, ``seed``.
        seed: data seed used when ``loader_cfg.seed`` is None (restored on resume).
    """

    def __init__(self, loader_cfg: DictConfig, seed: int | None = None) -> None:
        self._cfg = loader_cfg
        self.seed = seed
        self.batches_consumed = 0

    def _build(self) -> Iterable:
        cfg = copy.deepcopy(self._cfg)
        cfg.start_iter = self.batches_consumed
        if "seed" in _parameters(cfg) and cfg.get("seed") is None and self.seed is not None:
            cfg.seed = self.seed
        if self.batches_consumed:
            logger.info(f"Train loader resumes after {self.batches_consumed} batches.")
        return instantiate(cfg)

    def __iter__(self) -> Iterator:
        # built when the trainer asks for its first batch, i.e. after it seeded the iteration:
        # whatever the builders draw must not shift the model's random numbers of that iteration
        with preserved_random_state():
            batches = iter(self._build())
        for batch in batches:
            self.batches_consumed += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"batches_consumed": self.batches_consumed, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches_consumed = int(state["batches_consumed"])
        if state.get("seed") is not None:
            self.seed = int(state["seed"])


def _parameters(loader_cfg: DictConfig) -> dict[str, inspect.Parameter]:
    target = loader_cfg.get("_target_")
    target = locate(target) if isinstance(target, str) else target
    try:
        return dict(inspect.signature(target).parameters)
    except (TypeError, ValueError):  # builtins or C callables without a signature
        return {}


def build_train_loader(loader_cfg: Any, seed: int | None = None) -> Iterable:
    """The train loader of ``cfg.dataloader.train``: a ``ResumableLoader`` when its builder takes
    ``start_iter``, else the instantiated object itself.

    Args:
        loader_cfg: ``cfg.dataloader.train``.
        seed: fallback data seed (see ``ResumableLoader``).
    """
    if isinstance(loader_cfg, DictConfig) and "_target_" in loader_cfg:
        if "start_iter" in _parameters(loader_cfg):
            return ResumableLoader(loader_cfg, seed=seed)
    loader = instantiate(loader_cfg)
    if not callable(getattr(loader, "load_state_dict", None)):
        logger.info(
            "The train loader cannot record its position (no start_iter argument, no "
            "state_dict()/load_state_dict()): --resume restarts its sequence."
        )
    return loader
