"""Run ``tools/train_net.py`` in a subprocess, as a user would, and read what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_NET = REPO_ROOT / "tools" / "train_net.py"
CONFIGS = REPO_ROOT / "projects" / "maskdino" / "configs"


def subprocess_env(**extra: str) -> dict[str, str]:
    """One intra-op thread (the same results and similar speed on a loaded machine) and no GPU
    even where there is one: these tests check the CPU path."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", WANDB_SILENT="true"
    )
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        env.pop(key, None)
    env.update(extra)
    return env


def run_train_net(
    config: str, *overrides: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python tools/train_net.py --config-file <configs>/<config> <overrides>`` from the repo
    root; fails the test with the end of the output when the command fails."""
    command = [sys.executable, str(TRAIN_NET), "--config-file", str(CONFIGS / config), *overrides]
    proc = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=env or subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited with {proc.returncode}:\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-6000:]}"
        )
    return proc


def read_metrics(output_dir: Path) -> list[dict]:
    """The records of ``metrics.json`` (one JSON object per line)."""
    with open(output_dir / "metrics.json") as f:
        return [json.loads(line) for line in f if line.strip()]


def final_evaluation(records: list[dict], key: str = "segm/AP") -> dict:
    """The last record holding evaluation results."""
    found = [r for r in records if key in r]
    assert found, f"no record with {key!r} in metrics.json; keys: {sorted(records[-1])}"
    return found[-1]
