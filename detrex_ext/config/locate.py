"""Turn dotted import paths into Python objects and back.

Configs store call targets as live objects in memory and as dotted strings on disk
(``"torch.optim.AdamW"``). :func:`locate` imports the object named by a string;
:func:`target_to_string` finds the shortest dotted path that still imports the same object, so
``torch.optim.adamw.AdamW`` is written as ``torch.optim.AdamW``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["locate", "split_import_path", "target_to_string", "NotImportableError"]


class NotImportableError(ValueError):
    """An object has no dotted import path that leads back to it (lambda, local or __main__ object)."""


def split_import_path(name: str) -> tuple[str, str]:
    """Split a dotted path into its longest importable module and the attribute path after it.

    ``"torch.optim.AdamW"`` -> ``("torch.optim", "AdamW")``; the module is imported on the way.

    Raises:
        ImportError: not even the first component is an importable module.
    """
    if not isinstance(name, str) or not name or name.startswith(".") or ".." in name:
        raise ImportError(
            f"cannot locate {name!r}: expected an absolute dotted path like 'pkg.mod.Name'"
        )
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            # Only "this very module does not exist" means: try a shorter prefix. A module that
            # exists but fails to import one of *its* dependencies is a real error.
            if (
                e.name is not None
                and module_name != e.name
                and not module_name.startswith(e.name + ".")
            ):
                raise
            continue
        return module_name, ".".join(parts[split:])
    raise ImportError(f"cannot locate {name!r}: no module named {parts[0]!r}")


def locate(name: str) -> Any:
    """Import and return the object named by a dotted path such as ``"torch.nn.Conv2d"``.

    The longest importable module prefix is imported, the rest is read as attributes.

    Raises:
        ImportError: nothing importable has that name; the message says which part failed.
    """
    module_name, attributes = split_import_path(name)
    obj: Any = importlib.import_module(module_name)
    owner = module_name
    for attr in attributes.split(".") if attributes else []:
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise ImportError(
                f"cannot locate {name!r}: {owner!r} has no attribute {attr!r}"
            ) from None
        owner = f"{owner}.{attr}"
    return obj


def _same_object(path: str, obj: Any) -> bool:
    try:
        return locate(path) is obj
    except ImportError:
        return False


def target_to_string(obj: Any) -> str:
    """The shortest dotted import path that :func:`locate` resolves back to ``obj``.

    Raises:
        NotImportableError: ``obj`` is a lambda, a local function/class, defined in ``__main__``,
            or otherwise not reachable through an import path.
    """
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise NotImportableError(
            f"{obj!r} (type {type(obj).__name__}) has no import path: only module-level classes "
            "and functions can be written as dotted strings"
        )
    if "<lambda>" in qualname:
        raise NotImportableError(
            f"{obj!r} is a lambda, which cannot be saved; use a module-level function or a "
            "LazyCall'd callable class instead"
        )
    if "<locals>" in qualname:
        raise NotImportableError(
            f"{obj!r} is defined inside a function ({module}.{qualname}), so it has no import "
            "path; move it to module level"
        )
    if module == "__main__":
        raise NotImportableError(
            f"{obj!r} is defined in __main__ (a script or notebook), so it cannot be imported "
            "again when the config is loaded; move it into an importable module"
        )
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        candidate = ".".join(parts[:i]) + "." + qualname
        if _same_object(candidate, obj):
            return candidate
    raise NotImportableError(
        f"{obj!r}: importing '{module}.{qualname}' does not give the same object"
    )
