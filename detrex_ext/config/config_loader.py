"""Load config files: Python configs (with relative imports between them) and YAML dumps.

A ``.py`` config is executed in a fresh namespace. While it runs, ``builtins.__import__`` is
wrapped so that a *relative* import made by a config file (``from .models.maskdino_r50 import
model``, ``from ..common.train import train``) loads the named sibling ``.py`` file as another
config; every such import executes the file again, so two configs that import and then edit the
same dict never see each other's edits. Absolute imports (model code, ``get_config``) go through
Python's normal import system.

A ``.yaml`` config (as written by :func:`detrex_ext.config.LazyConfig.save`) is read with a safe
YAML loader that only knows plain data plus ``!!python/name:<dotted.path>`` references.
"""

from __future__ import annotations

import builtins
import inspect
import os
import threading
import types
import uuid
from collections import abc
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from .locate import locate

__all__ = ["load_config_file", "ConfigYamlLoader"]

# Namespaces of executing config files carry this package prefix, so the import hook can tell a
# relative import made by a config file from one made by ordinary library code.
_CONFIG_PACKAGE_PREFIX = "detrex_ext._config_file_"
_PY_SUFFIXES = (".py",)
_YAML_SUFFIXES = (".yaml", ".yml")
# builtins.__import__ is process-global: one loader patches it at a time (re-entrant for nested
# loads, e.g. a config that calls get_config()).
_LOAD_LOCK = threading.RLock()


def _as_config(value: Any) -> Any:
    """Plain dicts defined by a config file become DictConfig; everything else is kept."""
    if isinstance(value, dict):
        return DictConfig(value, flags={"allow_objects": True})
    return value


def _is_config_value(name: str, value: Any) -> bool:
    return not name.startswith("_") and isinstance(value, (dict, DictConfig, ListConfig))


def _defined_names(values: abc.Mapping) -> str:
    """Public names a config file defines, for error messages (imports of code left out)."""
    names = sorted(
        str(k)
        for k, v in values.items()
        if not str(k).startswith("_")
        and not (isinstance(v, type) or callable(v) or inspect.ismodule(v))
    )
    return ", ".join(names) or "(nothing)"


def _is_config_namespace(globals_: abc.Mapping | None) -> bool:
    package = (globals_ or {}).get("__package__")
    return isinstance(package, str) and package.startswith(_CONFIG_PACKAGE_PREFIX)


def _relative_import_error(importer: str, level: int, name: str, problem: str) -> ImportError:
    statement = f"from {'.' * level}{name} import ..."
    return ImportError(
        f"config file {importer}: '{statement}' {problem}. Relative imports in config files load "
        "other config files only (write 'from .file import name' for ./file.py); import library "
        "and model code absolutely, e.g. 'from detrex_projects.maskdino.modeling import MaskDINO'"
    )


def _import_config_file(name: str, globals_: abc.Mapping, fromlist: Any, level: int) -> Any:
    """What ``from <dots><name> import <fromlist>`` returns when run inside a config file."""
    importer = Path(globals_["__file__"])
    if not name:
        raise _relative_import_error(
            str(importer), level, name, "names no file (use 'from .file import name')"
        )
    base = importer.parent
    for _ in range(level - 1):
        base = base.parent
    target = base.joinpath(*name.split("."))
    if target.is_dir():
        raise _relative_import_error(
            str(importer), level, name, f"points to the directory {target}, not a config file"
        )
    path = target.with_name(target.name + ".py")
    if not path.is_file():
        raise _relative_import_error(
            str(importer), level, name, f"needs {path}, which does not exist"
        )
    namespace = _execute_python_config(path)
    module = types.ModuleType(namespace["__name__"])
    module.__dict__.update(namespace)
    for item in fromlist or ():
        if item == "*":
            for key, value in namespace.items():
                if not key.startswith("_"):
                    setattr(module, key, _as_config(value))
            continue
        if item not in namespace:
            raise ImportError(
                f"config file {importer}: cannot import name {item!r} from {path}; "
                f"it defines: {_defined_names(namespace)}"
            )
        setattr(module, item, _as_config(namespace[item]))
    return module


@contextmanager
def _config_relative_imports() -> Iterator[None]:
    original_import = builtins.__import__

    def config_aware_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level > 0 and _is_config_namespace(globals):
            return _import_config_file(name, globals, fromlist, level)
        return original_import(name, globals, locals, fromlist, level)

    builtins.__import__ = config_aware_import
    try:
        yield
    finally:
        builtins.__import__ = original_import


def _execute_python_config(path: Path) -> dict[str, Any]:
    """Run one config file and return its namespace (a fresh one on every call)."""
    source = path.read_text(encoding="utf-8")
    code = compile(source, str(path), "exec")  # a SyntaxError names the file and line
    package = f"{_CONFIG_PACKAGE_PREFIX}{uuid.uuid4().hex[:8]}"
    namespace: dict[str, Any] = {
        "__file__": str(path),
        "__package__": package,
        "__name__": f"{package}.{path.stem}",
    }
    with _LOAD_LOCK, _config_relative_imports():
        exec(code, namespace)
    return namespace


class ConfigYamlLoader(yaml.SafeLoader):
    """Safe YAML loader plus ``!!python/name:pkg.mod.attr`` (resolved by import) and tuples."""


def _construct_python_name(loader: yaml.Loader, suffix: str, node: yaml.Node) -> Any:
    try:
        return locate(suffix)
    except ImportError as e:
        raise yaml.constructor.ConstructorError(
            None, None, f"cannot import {suffix!r}: {e}", node.start_mark
        ) from e


def _construct_tuple(loader: yaml.Loader, node: yaml.Node) -> list:
    return loader.construct_sequence(node)


ConfigYamlLoader.add_multi_constructor("tag:yaml.org,2002:python/name:", _construct_python_name)
ConfigYamlLoader.add_constructor("tag:yaml.org,2002:python/tuple", _construct_tuple)


def _load_yaml_config(path: Path) -> DictConfig:
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.load(f, Loader=ConfigYamlLoader)  # a SafeLoader subclass
        except yaml.constructor.ConstructorError as e:
            raise ValueError(
                f"cannot load {path}: {e}. Only plain data and '!!python/name:' import paths are "
                "read (a file with live Python objects, as detectron2's save may write, is not "
                "loaded, because loading it would run arbitrary code)"
            ) from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping, got {type(data).__name__}")
    return OmegaConf.create(data, flags={"allow_objects": True})


def _select_keys(path: Path, values: abc.Mapping, keys: Any) -> Any:
    def pick(key: str) -> Any:
        if key not in values:
            raise KeyError(
                f"{path} has no top-level name {key!r}; it defines: {_defined_names(values)}"
            )
        return _as_config(values[key])

    if isinstance(keys, str):
        return pick(keys)
    return tuple(pick(k) for k in keys)


def load_config_file(path: str | os.PathLike, keys: Any = None) -> Any:
    """Load a ``.py`` or ``.yaml`` config file.

    Args:
        path: the file.
        keys: None for the whole config: a DictConfig of every top-level name that holds a dict,
            DictConfig or ListConfig and does not start with ``_`` (other top-level values, such
            as ``image_size = 1024``, are left out, as in detectron2); a name to get that one value
            (any type); or a tuple of names to get a tuple of values.
    """
    path = Path(os.fspath(path))
    suffix = path.suffix.lower()
    if suffix not in _PY_SUFFIXES + _YAML_SUFFIXES:
        raise ValueError(f"cannot load config {path}: expected a .py, .yaml or .yml file")
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    path = path.resolve()
    if suffix in _PY_SUFFIXES:
        values: abc.Mapping = _execute_python_config(path)
    else:
        values = _load_yaml_config(path)
    if keys is not None:
        return _select_keys(path, values, keys)
    if isinstance(values, DictConfig):
        return values
    selected = {k: v for k, v in values.items() if _is_config_value(k, v)}
    return DictConfig(selected, flags={"allow_objects": True})
