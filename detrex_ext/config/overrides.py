"""Command-line overrides (``key=value``) applied to a lazy config, parsed by hydra-core.

Supported forms (hydra's grammar decides the value type: ``1`` int, ``1e-4`` float, ``true``
bool, ``null`` None, ``[1,2]`` list, ``{a:1}`` dict, ``${train.max_iter}`` interpolation):

- ``a.b=1``: change an existing key; an unknown key is an error that suggests the closest
  existing keys. A dict value merges into an existing node, a list value replaces the old list,
  ``a.list.0=5`` sets one list element.
- ``+a.b=1``: add a key that does not exist yet (an error if it does).
- ``++a.b=1``: set a key whether it exists or not.
- ``~a.b``: delete a key (``~a.b=1`` deletes it only if its value is 1).

A new value must fit the value it replaces: a number (or true/false) cannot become a word
(``train.max_iter=abc``, ``train.max_iter=``), a config section cannot become a plain value.
``1e4`` for an integer becomes ``10000``. ``None`` is hydra's *string* 'None' (``null`` is None): refused where a number
is expected, warned about elsewhere. Interpolations (``${...}``) and ``null`` are always accepted.

Sweeps (``a=1,2``, ``choice(...)``, ``range(...)``, ``glob(...)``, ``interval(...)``) describe
several runs; they are rejected here and belong to the launcher's ``--multirun``.
"""

from __future__ import annotations

import difflib
import logging
from typing import Any, Iterator, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["apply_overrides", "ConfigOverrideError"]

_MAX_LISTED_KEYS = 20

logger = logging.getLogger(__name__)


class ConfigOverrideError(KeyError, ValueError):
    """An override cannot be applied; the message says why and how to fix it.

    A ``KeyError`` as in detectron2 (``except KeyError`` around ``apply_overrides`` keeps
    working) and a ``ValueError``; ``str()`` is the plain message (``KeyError`` alone would
    quote it).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _child(node: Any, part: str) -> Any:
    """The child node named ``part`` (without resolving interpolations), or None if absent."""
    if isinstance(node, DictConfig) and not node._is_none() and not node._is_interpolation():
        if part in node.keys():
            return node._get_node(part)
    elif isinstance(node, ListConfig) and not node._is_none() and not node._is_interpolation():
        if part.isdigit() and int(part) < len(node):
            return node._get_node(int(part))
    return None


def _is_container(node: Any) -> bool:
    return (
        isinstance(node, (DictConfig, ListConfig))
        and not node._is_none()
        and not node._is_interpolation()
    )


def _walk(cfg: DictConfig, parts: list[str]) -> tuple[Any, int]:
    """Follow ``parts`` from ``cfg``; returns the deepest node reached and how many parts matched."""
    node: Any = cfg
    for i, part in enumerate(parts):
        child = _child(node, part)
        if child is None:
            return node, i
        node = child
    return node, len(parts)


def _all_keys(node: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key path in the config (list elements as ``a.0``), without resolving values."""
    if not _is_container(node):
        return
    keys = range(len(node)) if isinstance(node, ListConfig) else node.keys()
    for key in keys:
        path = f"{prefix}{key}"
        yield path
        yield from _all_keys(node._get_node(key), path + ".")


def _closest_keys(cfg: DictConfig, key: str) -> list[str]:
    """Up to three existing keys the user probably meant, best first.

    Misspelled names next to the intended key come first (``train.max_iters`` ->
    ``train.max_iter``), then the same name elsewhere in the tree (``max_iter`` ->
    ``train.max_iter``), then, if neither found anything, similar full paths.
    """
    parts = key.split(".")
    all_keys = list(_all_keys(cfg))
    parent = ".".join(parts[:-1])
    siblings = [k for k in all_keys if k.rpartition(".")[0] == parent]
    names = [k.rpartition(".")[2] for k in siblings]
    found = [
        f"{parent}.{name}" if parent else name
        for name in difflib.get_close_matches(parts[-1], names, n=3, cutoff=0.6)
    ]
    found += [k for k in all_keys if k.rpartition(".")[2] == parts[-1] and k not in found]
    if not found:
        found = difflib.get_close_matches(key, all_keys, n=3, cutoff=0.6)
    return found[:3]


def _unknown_key_message(cfg: DictConfig, key: str, parts: list[str], matched: int) -> str:
    message = f"unknown config key {key!r}"
    suggestions = _closest_keys(cfg, key)
    if suggestions:
        message += ". Did you mean: " + ", ".join(repr(s) for s in suggestions) + "?"
    else:
        parent = ".".join(parts[:matched])
        node, _ = _walk(cfg, parts[:matched])
        siblings = [str(k) for k in (node.keys() if isinstance(node, DictConfig) else [])]
        shown = ", ".join(siblings[:_MAX_LISTED_KEYS]) + (
            " ..." if len(siblings) > _MAX_LISTED_KEYS else ""
        )
        where = f"{parent!r} has keys" if parent else "top-level keys are"
        message += f". No similar key exists; {where}: {shown or '(none)'}"
    return message


def _check_settable(cfg: DictConfig, override: str, key: str, parts: list[str]) -> None:
    """Raise if a prefix of ``key`` is a value rather than a config node."""
    node, matched = _walk(cfg, parts)
    if matched < len(parts) and matched > 0 and not _is_container(node):
        prefix = ".".join(parts[:matched])
        raise ConfigOverrideError(
            f"override {override!r}: {prefix!r} holds a value ({node._value()!r}), not a config "
            f"node, so {key!r} cannot be set inside it"
        )


def _delete(cfg: DictConfig, override: str, key: str, parts: list[str], expected: Any) -> None:
    node, matched = _walk(cfg, parts)
    if matched < len(parts):
        raise ConfigOverrideError(
            f"override {override!r}: cannot delete, {_unknown_key_message(cfg, key, parts, matched)}"
        )
    parent, _ = _walk(cfg, parts[:-1])
    last: Any = int(parts[-1]) if isinstance(parent, ListConfig) else parts[-1]
    if expected is not None:
        current = OmegaConf.to_container(node) if _is_container(node) else parent[last]
        if current != expected:
            raise ConfigOverrideError(
                f"override {override!r}: {key!r} is {current!r}, not {expected!r}; not deleted"
            )
    del parent[last]


def _sweep_error(override: str) -> ConfigOverrideError:
    return ConfigOverrideError(
        f"override {override!r} is a sweep (it lists several values); apply_overrides sets one "
        "value per key. To run one job per value, give the sweep to the launcher with "
        f"--multirun (python tools/train_net.py --config-file <config> --multirun {override}). "
        "To set a string that contains commas, quote it: key='a,b'"
    )


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Apply command-line overrides to ``cfg`` in place and return it (see the module docstring).

    Raises:
        ConfigOverrideError: a malformed override, a sweep, an unknown key without ``+``, a ``+``
            on an existing key, or a key set inside a plain value.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if isinstance(overrides, str):
        raise TypeError("apply_overrides expects a list of 'key=value' strings, not one string")
    parser = OverridesParser.create()
    for text in overrides:
        try:
            override = parser.parse_override(text)
        except HydraException as e:
            raise ConfigOverrideError(f"cannot parse override {text!r}: {e}") from None
        if override.package is not None:
            raise ConfigOverrideError(
                f"override {text!r}: the '@package' syntax selects hydra config groups and has "
                "no meaning for a lazy config; write key=value"
            )
        if override.is_sweep_override():
            raise _sweep_error(text)
        key = override.key_or_group
        parts = key.split(".")
        value = override.value()
        if override.is_delete():
            _delete(cfg, text, key, parts, value)
            continue
        if not key:
            raise ConfigOverrideError(
                f"override {text!r} names no key; write path.to.key=value (e.g. train.max_iter=100)"
            )
        _check_settable(cfg, text, key, parts)
        node, matched = _walk(cfg, parts)
        exists = matched == len(parts)
        if override.is_add() and exists:
            raise ConfigOverrideError(
                f"override {text!r}: {key!r} already exists; drop the '+' to change it "
                f"({text[1:]!r}) or use '++' to set it whether or not it exists"
            )
        if not exists and not (override.is_add() or override.is_force_add()):
            raise ConfigOverrideError(
                f"override {text!r}: {_unknown_key_message(cfg, key, parts, matched)} "
                f"(to add a new key, write '+{text}')"
            )
        if exists:
            value = _checked_value(text, key, node, value, _is_unquoted_none(override))
        OmegaConf.update(cfg, key, value, merge=True, force_add=True)
    return cfg


def _is_unquoted_none(override: Any) -> bool:
    return getattr(override, "_value", None) == "None"  # a QuotedString "None" is intended


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    return f"{type(value).__name__} {value!r}"


def _checked_value(text: str, key: str, node: Any, value: Any, unquoted_none: bool) -> Any:
    """``value`` converted to fit the value at ``node``, or a ConfigOverrideError saying why it
    cannot replace it (see the module docstring)."""
    if value is None or (isinstance(value, str) and "${" in value):
        return value
    if _is_container(node):
        if isinstance(node, DictConfig) and not isinstance(value, dict):
            keys = ", ".join(str(k) for k in list(node.keys())[:_MAX_LISTED_KEYS])
            raise ConfigOverrideError(
                f"override {text!r}: {key!r} is a config section (keys: {keys}), not a value; "
                f"set one of its keys ({key}.<name>=...), or {key}=null to remove it"
            )
        if isinstance(node, ListConfig) and isinstance(value, (str, dict)):
            raise ConfigOverrideError(
                f"override {text!r}: {key!r} is a list; write a list, e.g. {key}=[1,2]"
            )
        return value
    current = node._value()
    if current is None or (isinstance(current, str) and "${" in current):
        if unquoted_none:
            _warn_string_none(text, key)
        return value
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigOverrideError(
                f"override {text!r}: {key!r} is a boolean ({current}); write {key}=true or "
                f"{key}=false{_none_hint(key, unquoted_none)}"
            )
        return value
    if isinstance(current, (int, float)):
        if isinstance(value, bool) or isinstance(value, (str, dict)):
            given = "no value" if value == "" else _describe(value)
            raise ConfigOverrideError(
                f"override {text!r}: {key!r} is {_describe(current)} but the override gives "
                f"{given}; write a number, e.g. {key}={current}{_none_hint(key, unquoted_none)}"
            )
        if isinstance(current, int) and isinstance(value, float) and value.is_integer():
            return int(value)  # 1e4 -> 10000
        return value
    if isinstance(current, str) and unquoted_none:
        _warn_string_none(text, key)
    return value


def _none_hint(key: str, unquoted_none: bool) -> str:
    return f" ('None' is a string; {key}=null sets None)" if unquoted_none else ""


_WARNED: set[str] = set()


def _warn_string_none(text: str, key: str) -> None:
    if text in _WARNED:  # the launcher applies the overrides twice (check, then run)
        return
    _WARNED.add(text)
    logger.warning(
        f"override {text!r} sets {key!r} to the string 'None'; if you meant None, write {key}=null"
    )
