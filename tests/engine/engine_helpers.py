"""Helpers of the engine tests: paths of the tiny config and of tools/train_net.py, and running it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ENGINE_TESTS = Path(__file__).resolve().parent
REPO_ROOT = ENGINE_TESTS.parents[1]
TINY_CONFIG = ENGINE_TESTS / "tiny_config.py"
TRAIN_NET = REPO_ROOT / "tools" / "train_net.py"


def subprocess_env() -> dict[str, str]:
    """One intra-op thread (results do not depend on the machine's load), the tiny task
    importable, and no GPU even where there is one (CPU behaviour is what these tests check)."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=os.pathsep.join([str(ENGINE_TESTS), env.get("PYTHONPATH", "")]),
        WANDB_SILENT="true",
    )
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        env.pop(key, None)
    return env


def train_net_command(*args: str) -> list[str]:
    return [sys.executable, str(TRAIN_NET), "--config-file", str(TINY_CONFIG), *args]


def run_train_net(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run tools/train_net.py on the tiny config; fail the test with its output if it fails."""
    proc = subprocess.run(
        train_net_command(*args),
        env=subprocess_env(),
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(f"train_net.py {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc
