"""``instantiate``: build the objects a lazy config describes.

Recursive and depth-first: every argument is built before the call that receives it. Nodes with
a ``_target_`` become ``target(**kwargs)``; all other dicts and lists are rebuilt as plain Python
``dict`` and ``list`` (so constructors never receive ``DictConfig``/``ListConfig``), with any lazy
calls inside them built too. Interpolations (``${..num_classes}``) are resolved against the whole
config the node lives in, so building a sub-tree (``instantiate(cfg.model)``) still sees
``${train.device}``.

Unlike detectron2, target-less dicts are not returned untouched: lazy calls inside them are built
(like hydra's ``_convert_="all"``), because a plain dict handed to a constructor should hold
plain objects.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
from collections import abc
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from .locate import locate

__all__ = ["instantiate", "InstantiationError"]


class InstantiationError(RuntimeError):
    """Building one config node failed.

    Attributes:
        key: dotted key path of the node in its config (``"model.backbone"``).
        target: dotted name of the callable that was being built, or None.
    """

    def __init__(self, key: str, target: str | None, message: str):
        self.key = key
        self.target = target
        super().__init__(message)


def _target_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else repr(target)


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _root_path(cfg: Any) -> str:
    """Full key of ``cfg`` inside the config it belongs to ('' for a root)."""
    if isinstance(cfg, (DictConfig, ListConfig)) and cfg._get_parent() is not None:
        try:
            return str(cfg._get_full_key(None))
        except Exception:  # best effort: only used to name keys in error messages
            return ""
    return ""


def _keyword_hint(target: Any, error: BaseException) -> str:
    """'Did you mean ...' for a misspelled keyword argument, when the signature is known."""
    match = re.search(r"unexpected keyword argument '(\w+)'", str(error))
    if not match:
        return ""
    try:
        parameters = list(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return ""
    close = difflib.get_close_matches(match.group(1), parameters, n=3, cutoff=0.6)
    if close:
        return " Did you mean: " + ", ".join(repr(c) for c in close) + "?"
    return " Accepted arguments: " + ", ".join(parameters)


def _read(node: DictConfig | ListConfig, key: Any, path: str) -> Any:
    """``node[key]`` with interpolations resolved; a missing value ('???') names its key."""
    try:
        return node[key]
    except MissingMandatoryValue:
        raise InstantiationError(
            path, None, f"config key {path!r} is missing ('???'); set it before instantiating"
        ) from None
    except OmegaConfBaseException as e:
        raise InstantiationError(path, None, f"cannot read config key {path!r}: {e}") from e


def _build_call(cfg: Any, path: str) -> Any:
    keys = list(cfg.keys())
    read = (
        (lambda k: _read(cfg, k, _join(path, k)))
        if isinstance(cfg, DictConfig)
        else cfg.__getitem__
    )
    target = _build(read("_target_"), _join(path, "_target_"))
    kwargs = {k: _build(read(k), _join(path, k)) for k in keys if k != "_target_"}
    if isinstance(target, str):
        try:
            target = locate(target)
        except ImportError as e:
            raise InstantiationError(
                path, target, f"cannot build config key {path or '<root>'!r}: {e}"
            ) from e
    name = _target_name(target)
    if not callable(target):
        raise InstantiationError(
            path,
            name,
            f"cannot build config key {path or '<root>'!r}: _target_ {target!r} is not callable",
        )
    try:
        return target(**kwargs)
    except InstantiationError:
        raise
    except Exception as e:
        hint = _keyword_hint(target, e) if isinstance(e, TypeError) else ""
        detail = str(e).rstrip()
        if not detail.endswith((".", "!", "?")):
            detail += "."
        raise InstantiationError(
            path,
            name,
            f"error building config key {path or '<root>'!r} (target {name}): "
            f"{type(e).__name__}: {detail}{hint}",
        ) from e


def _build(cfg: Any, path: str) -> Any:
    if isinstance(cfg, (DictConfig, ListConfig)) and cfg._is_none():
        return None
    if isinstance(cfg, ListConfig):
        return [_build(_read(cfg, i, _join(path, i)), _join(path, i)) for i in range(len(cfg))]
    if isinstance(cfg, DictConfig):
        object_type = OmegaConf.get_type(cfg)
        if dataclasses.is_dataclass(object_type):
            return OmegaConf.to_object(cfg)
        if "_target_" in cfg:
            return _build_call(cfg, path)
        return {k: _build(_read(cfg, k, _join(path, k)), _join(path, k)) for k in cfg.keys()}
    if isinstance(cfg, abc.Mapping):
        if "_target_" in cfg:
            return _build_call(cfg, path)
        return {k: _build(v, _join(path, k)) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        built = [_build(v, _join(path, i)) for i, v in enumerate(cfg)]
        return tuple(built) if isinstance(cfg, tuple) else built
    return cfg


def instantiate(cfg: Any) -> Any:
    """Build the object(s) that ``cfg`` describes (see the module docstring).

    Raises:
        InstantiationError: a node failed to build. The message names its config key path, the
            target, and the original exception (kept as ``__cause__``). When the failure is deep
            in the tree, the innermost failing node is named.
    """
    return _build(cfg, _root_path(cfg))
