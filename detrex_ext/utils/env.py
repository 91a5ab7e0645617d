"""Seeding and environment reports.

``seed_all_rng`` seeds every generator a training process uses (python, numpy, torch on all
devices). ``derive_seed`` turns a run seed plus coordinates (rank, iteration) into a well-mixed
seed, which the trainer uses to reseed at every iteration so that a resumed run reproduces the
random stream of an uninterrupted one without saving generator states.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import random
import sys
from collections.abc import Iterator
from datetime import datetime

import numpy as np
import torch
from tabulate import tabulate

from .malloc import user_malloc_settings

__all__ = ["seed_all_rng", "derive_seed", "preserved_random_state", "collect_env_info"]


def seed_all_rng(seed: int | None = None) -> int:
    """Seed python's ``random``, numpy, torch (CPU and every CUDA device) and ``PYTHONHASHSEED``.

    Args:
        seed: the seed; None draws a fresh one from the pid, the clock and ``os.urandom``.

    Returns:
        The seed used.
    """
    if seed is None:
        seed = (
            os.getpid()
            + int(datetime.now().strftime("%S%f"))
            + int.from_bytes(os.urandom(2), "big")
        ) % 2**31
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ["PYTHONHASHSEED"] = str(seed)
    return seed


@contextlib.contextmanager
def preserved_random_state() -> Iterator[None]:
    """Put back the states of python's ``random``, numpy and torch (CPU, and CUDA when it is
    initialised) when the block ends: what runs inside cannot shift the caller's random streams.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def derive_seed(*coordinates: int) -> int:
    """A 63-bit seed that depends on all ``coordinates`` (e.g. run seed, rank, iteration).

    Uses numpy's ``SeedSequence`` hashing, so nearby coordinates give unrelated streams (a plain
    ``seed + iteration`` would make rank 1 at iteration 0 replay rank 0 at iteration 1).
    """
    words = np.random.SeedSequence([int(c) % 2**63 for c in coordinates]).generate_state(2)
    return (int(words[0]) << 31 | int(words[1]) >> 1) % 2**63


def _version_of(distribution: str) -> str:
    # package metadata, not an import: importing timm or triton just to print a version is slow
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def collect_env_info() -> str:
    """A table of platform, package versions and devices, for the head of every log."""
    import detrex_ext

    rows: list[tuple[str, str]] = [
        ("sys.platform", sys.platform),
        ("Python", sys.version.replace("\n", " ")),
        ("machine", platform.machine()),
        ("detrex_ext", f"{detrex_ext.__version__} @ {os.path.dirname(detrex_ext.__file__)}"),
        ("numpy", np.__version__),
        ("PyTorch", f"{torch.__version__} @ {os.path.dirname(torch.__file__)}"),
    ]
    for name in (
        "torchvision",
        "timm",
        "fvcore",
        "iopath",
        "omegaconf",
        "hydra-core",
        "pycocotools",
    ):
        rows.append((name, _version_of(name)))
    rows.append(("CPU threads (torch)", str(torch.get_num_threads())))
    rows.append(("os.cpu_count()", str(os.cpu_count())))
    rows.append(("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "<not set>")))
    malloc = [f"{key}={os.environ[key]}" for key in user_malloc_settings(os.environ)]
    rows.append(("malloc settings", " ".join(malloc) or "<C library defaults>"))
    cuda_ok = torch.cuda.is_available()
    rows.append(("CUDA available", str(cuda_ok)))
    if cuda_ok:
        rows.append(("CUDA (torch build)", str(torch.version.cuda)))
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            memory_gib = props.total_memory / 2**30
            rows.append((f"GPU {index}", f"{props.name} ({memory_gib:.1f} GiB)"))
        rows.append(("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", "<not set>")))
        rows.append(("triton", _version_of("triton")))
    return tabulate(rows)
