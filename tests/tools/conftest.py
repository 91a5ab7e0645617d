"""Fixtures of the tool tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture()
def tiny_weights(tmp_path) -> Path:
    """Reference weights of the tiny model (tool_helpers.TINY_CONFIG): score = channel mean / 255."""
    path = tmp_path / "tiny.pth"
    state = {
        "pixel_scorer.weight": torch.full((1, 3, 1, 1), 1 / 3),
        "pixel_scorer.bias": torch.zeros(1),
    }
    torch.save({"model": state}, path)
    return path
