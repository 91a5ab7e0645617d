"""Command-line overrides (``key=value``) applied to a lazy config, parsed by hydra-core.

Supported forms (hydra's grammar decides the value type: ``1`` int, ``1e-4`` float, ``true``
bool, ``null`` None, ``[1,2]`` list, ``{a:1}`` dict, ``${train.max_iter}`` interpolation):

- ``a.b=1``: change an existing key; an unknown key is an error that suggests the closest
  existing keys. A dict value merges into an existing node, a list value replaces the old list,
  ``a.list.0=5`` sets one list element.
- ``+a.b=1``: add a key that does not exist yet (an error if it does).
- ``++a.b=1``: set a key whether it exists or not.
- ``~a.b``: delete a key (``~a.b=1`` deletes it only if its value is 1).

Sweeps (``a=1,2``, ``choice(...)``, ``range(...)``, ``glob(...)``, ``interval(...)``) describe
several runs; they are rejected here and belong to the launcher's ``--multirun``.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterator, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["apply_overrides", "ConfigOverrideError"]

_MAX_LISTED_KEYS = 20


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
        _check_settable(cfg, text, key, parts)
        _, matched = _walk(cfg, parts)
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
        OmegaConf.update(cfg, key, value, merge=True, force_add=True)
    return cfg
