"""``LazyConfig``: the detectron2/detrex facade over loading, saving and editing lazy configs."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig

from .config_loader import load_config_file
from .overrides import apply_overrides
from .serialization import config_to_py, save_config

__all__ = ["LazyConfig"]


class LazyConfig:
    """Load, save, override and print lazy configs (all static methods, as in detectron2)."""

    @staticmethod
    def load(filename: str | os.PathLike, keys: str | Sequence[str] | None = None) -> Any:
        """Load a ``.py`` config (relative imports between config files allowed) or a ``.yaml``
        dump. ``keys``: None for the whole config, a name for one value, a tuple for several.
        """
        return load_config_file(filename, keys)

    @staticmethod
    def load_rel(filename: str | os.PathLike, keys: str | Sequence[str] | None = None) -> Any:
        """Like :meth:`load`, with ``filename`` relative to the file that calls ``load_rel``
        (typically another config file).
        """
        caller = sys._getframe(1).f_code.co_filename
        return load_config_file(Path(caller).parent / filename, keys)

    @staticmethod
    def save(cfg: Any, filename: str | os.PathLike) -> None:
        """Write ``cfg`` as YAML that :meth:`load` reads back equal (call targets as dotted import
        paths). A value that cannot be written (a lambda, a local function, an arbitrary object)
        raises ``UnsaveableConfigError`` naming its key, and nothing is written.
        """
        save_config(cfg, filename)

    @staticmethod
    def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
        """Apply ``["a.b=1", "+new.key=3", "~drop.key", ...]`` in place (hydra-core grammar)."""
        return apply_overrides(cfg, overrides)

    @staticmethod
    def to_py(cfg: Any, prefix: str = "cfg.") -> str:
        """Readable Python text of ``cfg`` (formatted with black when it is installed)."""
        return config_to_py(cfg, prefix=prefix)
