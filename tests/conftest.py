"""Shared pytest fixtures: seeding, the optional real datasets in ../shared, GPU skipping."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(
    os.environ.get("DETREX_SHARED_DATASETS", REPO_ROOT.parent / "shared" / "datasets")
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none is available")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Every test starts from the same random state, so failures reproduce."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def _shared_dataset(name: str) -> Path:
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"real dataset {name!r} not found at {path} (set DETREX_SHARED_DATASETS)")
    return path


@pytest.fixture(scope="session")
def coco_mini_root() -> Path:
    """../shared/datasets/coco_mini: 100 train2017 + 100 val2017 COCO images in detectron2 layout."""
    return _shared_dataset("coco_mini")


@pytest.fixture(scope="session")
def ade20k_sample_root() -> Path:
    """../shared/datasets/ade20k_sample: 3 ADE20K validation images (ADEChallengeData2016 layout)."""
    return _shared_dataset("ade20k_sample")
