"""Helpers of the tool tests: the tiny config, a test image, importing tools/*.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = Path(__file__).parent / "fixtures" / "tiny_config.py"


def load_tool(name: str) -> ModuleType:
    """Import ``tools/<name>.py`` (tools/ is not a package) so tests can call its functions."""
    spec = importlib.util.spec_from_file_location(
        f"tools_{name}", REPO_ROOT / "tools" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def half_bright_image(height: int = 48, width: int = 96) -> np.ndarray:
    """Left half bright (220), right half dark (40): the tiny model's mask is the left half."""
    image = np.full((height, width, 3), 40, dtype=np.uint8)
    image[:, : width // 2] = 220
    return image
