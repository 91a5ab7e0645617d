"""Our configs under a launcher written to detrex's contract (``detrex_contract_launcher.py``, in
place of detrex's ``tools/train_net.py``, which CI cannot install): the demo config trains, saves a
reloadable config.yaml (no ``optimizer.params.model`` in it), evaluates, and ``--eval-only`` on its
checkpoint prints the same metrics as this project's ``tools/train_net.py --eval-only``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detrex_ext.config import LazyConfig

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = Path(__file__).with_name("detrex_contract_launcher.py")
DEMO = REPO_ROOT / "projects" / "maskdino" / "configs" / "maskdino_demo_synthetic.py"
ITERATIONS = 20


def _run(script: Path, *args: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, str(script), "--config-file", str(DEMO), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    return output


def _copypaste(output: str) -> list[str]:
    """The metric tables print_csv_format logs ('copypaste: ...' lines), in order."""
    return [
        line.split("copypaste: ", 1)[1] for line in output.splitlines() if "copypaste: " in line
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("contract")
    _run(
        LAUNCHER,
        f"train.output_dir={output_dir}",
        f"train.max_iter={ITERATIONS}",
        "train.log_period=1",
        "train.checkpointer.period=100",
    )
    return output_dir


def test_demo_config_trains_under_the_detrex_contract(trained):
    records = [json.loads(line) for line in (trained / "metrics.json").read_text().splitlines()]
    losses = [r for r in records if "total_loss" in r]
    assert [r["iteration"] for r in losses] == list(range(ITERATIONS))
    assert all(math.isfinite(r["total_loss"]) and math.isfinite(r["loss_ce"]) for r in losses)
    final = [r for r in records if "panoptic_seg/PQ" in r][-1]
    for key in ("bbox/AP", "segm/AP", "panoptic_seg/PQ", "sem_seg/mIoU"):
        assert 0.0 <= final[key] <= 100.0, key
    assert (trained / "model_final.pth").is_file()
    # default_setup saved the config before the launcher set optimizer.params.model
    saved = LazyConfig.load(str(trained / "config.yaml"))
    assert "model" not in saved.optimizer.params
    assert saved.train.max_iter == ITERATIONS


def test_eval_only_matches_our_launcher(trained, tmp_path):
    checkpoint = f"train.init_checkpoint={trained / 'model_final.pth'}"
    contract = _run(LAUNCHER, "--eval-only", checkpoint, f"train.output_dir={tmp_path / 'a'}")
    ours = _run(
        REPO_ROOT / "tools" / "train_net.py",
        "--eval-only",
        checkpoint,
        f"train.output_dir={tmp_path / 'b'}",
        "train.visualize.enabled=False",
    )
    tables = _copypaste(contract)
    assert len(tables) == 3 * 4  # task, header, values of panoptic, bbox, segm and sem_seg
    assert tables == _copypaste(ours)
    assert float(tables[-1].split(",")[0]) > 0  # mIoU: a trained model, not all zeros
    # and the same values as the evaluation at the end of training (same weights)
    results = json.loads(contract.split("results: ", 1)[1].splitlines()[0])
    records = [json.loads(line) for line in (trained / "metrics.json").read_text().splitlines()]
    final = [r for r in records if "panoptic_seg/PQ" in r][-1]
    for task, metrics in results.items():
        for name, value in metrics.items():
            assert value == pytest.approx(final[f"{task}/{name}"], nan_ok=True), (task, name)
