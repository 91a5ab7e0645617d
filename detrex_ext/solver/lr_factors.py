"""Learning-rate factors by parameter name, as config-friendly callables (no lambdas).

A lambda in a config cannot be saved to ``config.yaml``; ``L(ModuleNameLrFactor)(patterns=...)``
can, and its fields can be changed from the command line
(``optimizer.params.lr_factor_func.patterns.backbone=0.2``).
"""

from __future__ import annotations

import re
from typing import Mapping

__all__ = ["ModuleNameLrFactor"]


class ModuleNameLrFactor:
    """``name -> lr factor``: the factor of the first pattern found in the parameter name.

    Args:
        patterns: ``{regex: factor}``, tried in order with ``re.search`` on the full parameter
            name; a plain word such as ``"backbone"`` matches any name that contains it (the
            detrex/Mask DINO rule ``0.1 if "backbone" in name else 1``); ``"^backbone\\."`` only
            matches the top-level ``backbone`` module.
        default: factor of names that match no pattern.

    Example::

        >>> f = ModuleNameLrFactor({"backbone": 0.1})
        >>> f("backbone.res2.0.conv1.weight"), f("sem_seg_head.predictor.class_embed.weight")
        (0.1, 1.0)
    """

    def __init__(self, patterns: Mapping[str, float], default: float = 1.0):
        self.patterns = {str(p): float(f) for p, f in dict(patterns).items()}
        self.default = float(default)
        self._compiled = [(re.compile(p), f) for p, f in self.patterns.items()]

    def __call__(self, name: str) -> float:
        for pattern, factor in self._compiled:
            if pattern.search(name):
                return factor
        return self.default

    def __repr__(self) -> str:
        return f"ModuleNameLrFactor(patterns={self.patterns!r}, default={self.default!r})"

    def __getstate__(self) -> dict:
        return {"patterns": self.patterns, "default": self.default}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["patterns"], state["default"])
