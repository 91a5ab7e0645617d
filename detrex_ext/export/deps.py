"""The optional export packages (the ``export`` extra), imported only when a feature needs them."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["INSTALL_HINT", "require"]

INSTALL_HINT = (
    "pip install '.[export]' in a checkout of this project (or: pip install onnx onnxruntime "
    "onnxscript)"
)


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` or raise an ImportError that names the missing package and the fix.

    Args:
        module: e.g. ``"onnxruntime"``.
        feature: what needs it, e.g. ``"ONNX export"``, for the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{feature} needs the optional package {module!r}, which is not installed "
            f"({error}). Install the export extra: {INSTALL_HINT}."
        ) from error
