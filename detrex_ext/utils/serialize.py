"""``PicklableWrapper``: lets lambdas and closures cross process boundaries (cloudpickle)."""

from __future__ import annotations

from typing import Any

import cloudpickle

__all__ = ["PicklableWrapper"]


class PicklableWrapper:
    """Wrap a callable so that pickling it goes through cloudpickle.

    Plain pickle stores functions by reference and so fails on lambdas, closures and functions
    defined in ``__main__`` of a spawned process; data-loader workers started with ``spawn`` or
    ``forkserver`` pickle their dataset, mapper included. Calls and attribute reads go to the
    wrapped object. Wrapping twice is the same as wrapping once.
    """

    def __init__(self, obj: Any) -> None:
        while isinstance(obj, PicklableWrapper):
            obj = obj._obj
        self._obj = obj

    def __reduce__(self) -> tuple:
        return _unwrap_loads, (cloudpickle.dumps(self._obj),)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._obj(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name == "_obj":  # not set yet (during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self._obj, name)

    def __repr__(self) -> str:
        return f"PicklableWrapper({self._obj!r})"


def _unwrap_loads(data: bytes) -> PicklableWrapper:
    return PicklableWrapper(cloudpickle.loads(data))
