"""Exact resume of the demo config through ``tools/train_net.py`` with its real train loader: a run
interrupted twice (Ctrl-C, then kill -9) and resumed, and a plain resume from an intermediate
checkpoint, end with weights and optimizer state bit-equal to an uninterrupted run's.

The demo draws random numbers in the model (denoising noise, point sampling) and in the data
(LSJ scale, crop, flip); the loader is built lazily at the first iteration of each run, so any
random number it took from the global generators would shift the model's stream of a resumed run.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from e2e_helpers import CONFIGS, REPO_ROOT, TRAIN_NET, subprocess_env

pytestmark = pytest.mark.slow

CONFIG = "maskdino_demo_synthetic.py"
# 6 iterations, checkpoints after iterations 1, 3 and 5; no evaluation or pictures (the weights
# are what is compared)
SHORT = [
    "train.max_iter=6",
    "train.checkpointer.period=2",
    "train.log_period=1",
    "dataloader.evaluator=null",
    "train.visualize.enabled=False",
]


def _command(output_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(TRAIN_NET),
        "--config-file",
        str(CONFIGS / CONFIG),
        *SHORT,
        f"train.output_dir={output_dir}",
        *extra,
    ]


def _start(output_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        _command(output_dir, *extra),
        cwd=REPO_ROOT,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _interrupt_after(proc: subprocess.Popen, output_dir: Path, checkpoint: str, sig: int) -> str:
    """Send ``sig`` as soon as ``last_checkpoint`` names ``checkpoint``; returns stderr."""
    marker = output_dir / "last_checkpoint"
    deadline = time.monotonic() + 240
    try:
        while not (marker.exists() and marker.read_text() == checkpoint):
            if proc.poll() is not None:
                pytest.fail(f"the run ended before writing {checkpoint}:\n{proc.stderr.read()}")
            assert time.monotonic() < deadline, f"no {checkpoint} within 240 s"
            time.sleep(0.02)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode != 0
    assert not (output_dir / "model_final.pth").exists(), "the run finished before the signal"
    return stderr


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_bit_equal(ours: Path, reference: Path) -> None:
    a, b = _load(ours), _load(reference)
    assert a["iteration"] == b["iteration"] == 5
    differing = [k for k, v in b["model"].items() if not torch.equal(a["model"][k], v)]
    assert not differing, f"{len(differing)} of {len(b['model'])} tensors differ: {differing[:5]}"
    ours_state, reference_state = (
        a["trainer"]["optimizer"]["state"],
        b["trainer"]["optimizer"]["state"],
    )
    assert ours_state.keys() == reference_state.keys()
    for index, state in reference_state.items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(ours_state[index][name], state[name]), (index, name)
    assert a["trainer"]["data_loader"] == b["trainer"]["data_loader"]


def test_demo_interrupted_twice_resumes_bit_exactly(tmp_path: Path) -> None:
    reference_dir, output_dir = tmp_path / "uninterrupted", tmp_path / "interrupted"
    # the uninterrupted run goes alongside the interrupted ones (one thread each)
    reference = _start(reference_dir)

    stderr = _interrupt_after(_start(output_dir), output_dir, "model_0000001.pth", signal.SIGINT)
    assert stderr.strip().endswith("train_net.py: interrupted (Ctrl-C)")  # no traceback
    log = (output_dir / "log.txt").read_text()
    assert "The last checkpoint is " in log and "model_0000001.pth; continue with --resume" in log
    _interrupt_after(
        _start(output_dir, "--resume"), output_dir, "model_0000003.pth", signal.SIGKILL
    )
    _, reference_err = reference.communicate(timeout=600)
    assert reference.returncode == 0, reference_err[-3000:]

    # the last resume, and alongside it a plain resume from an intermediate checkpoint of the
    # uninterrupted run
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    shutil.copy(reference_dir / "model_0000003.pth", plain_dir)
    (plain_dir / "last_checkpoint").write_text("model_0000003.pth")
    runs = {folder: _start(folder, "--resume") for folder in (output_dir, plain_dir)}
    for folder, proc in runs.items():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        assert "Resumed from iteration 3; continuing at 4." in (folder / "log.txt").read_text()
        _assert_bit_equal(folder / "model_final.pth", reference_dir / "model_final.pth")
