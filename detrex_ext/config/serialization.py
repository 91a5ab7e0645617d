"""Write configs out: YAML that loads back (``save``) and readable Python text (``to_py``).

``save`` refuses, before anything is written, a config holding a value that cannot be read back
(a lambda, a local function, an arbitrary object): the error names the config key, so the user
can fix it. Interpolations such as ``"${train.max_iter}"`` are written as they are, and live call
targets become the shortest import path that still imports them.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import logging
import os
from collections import abc
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError
from omegaconf.nodes import ValueNode

from .config_loader import ConfigYamlLoader
from .locate import NotImportableError, split_import_path, target_to_string

__all__ = ["save_config", "config_to_yaml_data", "config_to_py", "UnsaveableConfigError"]

logger = logging.getLogger(__name__)

_PLAIN_LEAF_TYPES = (type(None), bool, int, float, str)


class UnsaveableConfigError(ValueError):
    """A config value has no YAML form that loads back; ``key`` is its dotted key path."""

    def __init__(self, key: str, reason: str):
        self.key = key
        super().__init__(f"cannot save config key {key or '<root>'!r}: {reason}")


class _ImportPath(str):
    """A class or function stored as a value (not as ``_target_``): written as ``!!python/name``."""


class _ConfigYamlDumper(yaml.SafeDumper):
    pass


def _represent_import_path(dumper: yaml.SafeDumper, data: _ImportPath) -> yaml.Node:
    return dumper.represent_scalar(f"tag:yaml.org,2002:python/name:{data}", "")


_ConfigYamlDumper.add_representer(_ImportPath, _represent_import_path)


def _child_key(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _leaf_to_data(value: Any, path: str, is_target: bool) -> Any:
    if isinstance(value, enum.Enum):
        raise UnsaveableConfigError(
            path, f"{value!r} is an Enum member; store its name as a string"
        )
    if isinstance(value, _PLAIN_LEAF_TYPES):
        return value
    if isinstance(value, type) or inspect.isroutine(value):
        try:
            dotted = target_to_string(value)
        except NotImportableError as e:
            raise UnsaveableConfigError(path, str(e)) from None
        return dotted if is_target else _ImportPath(dotted)
    raise UnsaveableConfigError(
        path,
        f"{type(value).__module__}.{type(value).__qualname__} object {value!r:.80} has no YAML "
        "form; store plain data (numbers, strings, lists, dicts) or a LazyCall that builds the "
        "object",
    )


def _node_to_data(node: Any, path: str, is_target: bool = False) -> Any:
    """Depth-first conversion of a config (node or plain container) to YAML-safe data."""
    if isinstance(node, (DictConfig, ListConfig)):
        if node._is_none():
            return None
        if node._is_missing() or node._is_interpolation():
            return node._value()
        if isinstance(node, ListConfig):
            return [_node_to_data(node._get_node(i), _child_key(path, i)) for i in range(len(node))]
        data: dict[str, Any] = {}
        object_type = OmegaConf.get_type(node)
        if dataclasses.is_dataclass(object_type):
            # A dataclass-backed node: store the class as the call target so that instantiate()
            # rebuilds the same dataclass from the YAML.
            data["_target_"] = _leaf_to_data(object_type, _child_key(path, "_target_"), True)
        for key in node.keys():
            data[key] = _node_to_data(node._get_node(key), _child_key(path, key), key == "_target_")
        return data
    if isinstance(node, ValueNode):
        return _leaf_to_data(node._value(), path, is_target)
    if isinstance(node, abc.Mapping):
        return {k: _node_to_data(v, _child_key(path, k), k == "_target_") for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_node_to_data(v, _child_key(path, i)) for i, v in enumerate(node)]
    return _leaf_to_data(node, path, is_target)


def config_to_yaml_data(cfg: Any) -> Any:
    """The plain data ``save`` writes: dicts, lists, scalars; call targets as dotted strings.

    Raises:
        UnsaveableConfigError: a value has no YAML form; the message names its key path.
    """
    return _node_to_data(cfg, "")


def _dump(data: Any) -> str:
    return yaml.dump(
        data, Dumper=_ConfigYamlDumper, default_flow_style=None, width=9999, sort_keys=False
    )


def save_config(cfg: Any, filename: str | os.PathLike) -> None:
    """Write ``cfg`` to ``filename`` as YAML that :func:`load_config_file` reads back equal.

    Nothing is written when the config holds an unsaveable value; the file is replaced
    atomically, so an existing file is never left half-written.
    """
    text = _dump(config_to_yaml_data(cfg))
    # Safety net: what we write must read back to the same data (compared as YAML text, so that
    # NaN and import paths compare equal).
    reloaded = _node_to_data(yaml.load(text, Loader=ConfigYamlLoader), "")  # a SafeLoader subclass
    if _dump(reloaded) != text:
        raise UnsaveableConfigError("", "the YAML text does not load back to the same data")
    path = Path(os.fspath(filename))
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ---------------------------------------------------------------------------------------------
# to_py


class _PyRenderer:
    """Render plain config data as Python statements ``<prefix>key = value``."""

    def __init__(self) -> None:
        self.modules: set[str] = set()

    def dotted(self, target: Any) -> str:
        path = target if isinstance(target, str) else target_to_string(target)
        module, _ = split_import_path(path)
        if module:
            self.modules.add(module)
        return path

    def value(self, obj: Any) -> str:
        if isinstance(obj, abc.Mapping) and "_target_" in obj:
            args = ", ".join(f"{k}={self.value(v)}" for k, v in obj.items() if k != "_target_")
            return f"{self.dotted(obj['_target_'])}({args})"
        if isinstance(obj, abc.Mapping):
            return "{" + ", ".join(f"{k!r}: {self.value(v)}" for k, v in obj.items()) + "}"
        if isinstance(obj, (list, tuple)):
            return "[" + ", ".join(self.value(v) for v in obj) + "]"
        if isinstance(obj, type) or (callable(obj) and hasattr(obj, "__qualname__")):
            try:
                return self.dotted(obj)
            except NotImportableError:
                return repr(obj)
        return repr(obj)

    def statements(self, obj: abc.Mapping, prefix: str) -> list[str]:
        lines = []
        for key, value in obj.items():
            name = f"{prefix}{key}" if str(key).isidentifier() else f"{prefix.rstrip('.')}[{key!r}]"
            if isinstance(value, abc.Mapping) and value and "_target_" not in value:
                lines.extend(self.statements(value, name + "."))
            else:
                lines.append(f"{name} = {self.value(value)}")
        return lines


def _format_with_black(text: str) -> str:
    try:
        import black
    except ImportError:
        logger.debug("black is not installed; to_py returns unformatted text")
        return text
    try:
        return black.format_str(text, mode=black.Mode(line_length=100))
    except black.InvalidInput:
        return text


def config_to_py(cfg: Any, prefix: str = "cfg.", formatted: bool = True) -> str:
    """Readable Python text of a config: import lines, then one ``cfg.<key> = ...`` per value.

    Calls (``_target_`` nodes) are rendered as ``module.Name(arg=...)`` in the order the config
    lists them. Interpolations are resolved where they can be. With ``formatted`` the text goes
    through black when it is installed (optional dependency).
    """
    if isinstance(cfg, (DictConfig, ListConfig)):
        try:
            data = OmegaConf.to_container(cfg, resolve=True)
        except InterpolationResolutionError:
            data = OmegaConf.to_container(cfg, resolve=False)
    else:
        data = cfg
    renderer = _PyRenderer()
    body = renderer.statements(data, prefix)
    imports = [f"import {m}" for m in sorted(renderer.modules)]
    text = "\n".join(imports + ([""] if imports else []) + body) + "\n"
    return _format_with_black(text) if formatted else text
