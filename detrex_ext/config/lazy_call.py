"""``LazyCall`` (alias ``L``): record a call as a config node instead of making it.

``L(torch.optim.SGD)(lr=0.1, momentum=0.9)`` returns a ``DictConfig``
``{"_target_": torch.optim.SGD, "lr": 0.1, "momentum": 0.9}`` that :func:`instantiate` turns into
the real call later, after users have edited its fields.
"""

from __future__ import annotations

import dataclasses
from collections import abc
from typing import Any

from omegaconf import DictConfig

from .locate import target_to_string

__all__ = ["LazyCall", "L"]


class LazyCall:
    """Wrap a callable so that calling it returns a config node describing the call.

    Args:
        target: a callable (class or function), a dotted import path (``"torch.nn.Conv2d"``), or a
            mapping (a lazy config that itself instantiates to a callable).

    Only keyword arguments are accepted, because config fields are addressed by name.
    """

    def __init__(self, target: Any):
        if not (callable(target) or isinstance(target, (str, abc.Mapping))):
            raise TypeError(
                f"LazyCall target must be a callable, a dotted import path or a lazy config; "
                f"got {target!r} of type {type(target).__name__}"
            )
        self._target = target

    def __call__(self, *args: Any, **kwargs: Any) -> DictConfig:
        if args:
            raise TypeError(
                f"LazyCall({_describe(self._target)}) takes keyword arguments only, got {len(args)} "
                "positional argument(s); name them, e.g. L(f)(x=1)"
            )
        if "_target_" in kwargs:
            raise TypeError("LazyCall sets '_target_' itself; pass the target to L(...) instead")
        target = self._target
        if dataclasses.is_dataclass(target) and isinstance(target, type):
            # omegaconf cannot store dataclass types as values (omry/omegaconf#784): keep the path.
            target = target_to_string(target)
        kwargs = {"_target_": target, **kwargs}
        return DictConfig(content=kwargs, flags={"allow_objects": True})

    def __repr__(self) -> str:
        return f"LazyCall({_describe(self._target)})"


def _describe(target: Any) -> str:
    if isinstance(target, str):
        return repr(target)
    return getattr(target, "__qualname__", None) or repr(target)


L = LazyCall
