"""Nothing is lost and nothing is silently wrong around a run's output folder and checkpoints,
through tools/train_net.py on the tiny config:

- one run per output folder (a second one is refused naming the first one's pid; the lock of a
  killed run is taken over with a warning; temporaries of a killed save are removed at start);
- ``--resume`` with a damaged, missing or empty ``last_checkpoint`` continues from the newest
  intact checkpoint (still bit-exact), says why, and refuses when nothing is intact; a finished
  run says so; a save that fails for lack of space keeps the previous checkpoint;
- ``--eval-only`` refuses weights that do not cover the model.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from engine_helpers import REPO_ROOT, TINY_CONFIG, TRAIN_NET, subprocess_env, train_net_command

from detrex_ext.checkpoint import detection_checkpoint
from detrex_ext.engine.run_lock import LOCK_FILE_NAME, OutputDirInUseError, OutputDirLock
from detrex_ext.utils import file_io


def _train_net_module():
    spec = importlib.util.spec_from_file_location("train_net_under_test", TRAIN_NET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cli(*args: str) -> None:
    _train_net_module().cli(["--config-file", str(TINY_CONFIG), *args])


def _cli_error(capsys, *args: str) -> str:
    """Run the CLI expecting a reported error; returns its one-line message."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        _cli(*args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.split("train_net.py: error: ", 1)[1].strip()


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """An uninterrupted 20-iteration run (checkpoints after iterations 4, 9, 14, 19)."""
    output_dir = tmp_path_factory.mktemp("safety") / "full"
    proc = subprocess.run(
        train_net_command(f"train.output_dir={output_dir}"),
        env=subprocess_env(),
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return output_dir


def _copy_checkpoints(source: Path, target: Path, names: list[str]) -> None:
    """Copy in order, so that the last one is the newest (modification time)."""
    target.mkdir(parents=True)
    for index, name in enumerate(names):
        shutil.copy(source / name, target / name)
        stamp = time.time() - 100 + index
        os.utime(target / name, (stamp, stamp))


def _assert_same_final_weights(ours: Path, reference: Path) -> None:
    a, b = _load(ours / "model_final.pth"), _load(reference / "model_final.pth")
    for key, value in b["model"].items():
        assert torch.equal(a["model"][key], value), key


# ------------------------------------------------------------------------------ one run per folder


def test_second_run_in_the_same_folder_is_refused_naming_the_first(tmp_path, capsys) -> None:
    output_dir = tmp_path / "busy"
    first = subprocess.Popen(
        train_net_command("model.step_sleep=0.2", f"train.output_dir={output_dir}"),
        env=subprocess_env(),
        cwd=str(REPO_ROOT),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        lock_file = output_dir / LOCK_FILE_NAME
        while not (output_dir / "last_checkpoint").exists():  # training is under way
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert json.loads(lock_file.read_text())["pid"] == first.pid

        message = _cli_error(capsys, f"train.output_dir={output_dir}", "train.max_iter=3")
        assert f"{output_dir} is in use by another run (pid {first.pid} on " in message
        assert "train.output_dir=" in message
        assert first.poll() is None  # the first run goes on undisturbed
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        first.kill()
        first.wait()
    lines = (output_dir / "metrics.json").read_text().splitlines()
    iterations = [json.loads(line)["iteration"] for line in lines]
    assert iterations == sorted(iterations)  # one writer only

    # the killed run left its record: the next run takes the lock over, with a warning
    _cli(f"train.output_dir={output_dir}", "train.max_iter=3", "--resume")
    log = (output_dir / "log.txt").read_text()
    assert f"Took over the lock of {output_dir} left by a run that did not end cleanly (pid " in log
    assert f"pid {first.pid} " in log
    assert (output_dir / LOCK_FILE_NAME).read_text() == ""  # released at the end


def test_lock_is_exclusive_and_released(tmp_path) -> None:
    lock = OutputDirLock(tmp_path)
    lock.acquire()
    try:
        with pytest.raises(OutputDirInUseError, match=f"pid {os.getpid()} on "):
            OutputDirLock(tmp_path).acquire()  # a second open file description conflicts too
        with pytest.raises(OutputDirInUseError):
            OutputDirLock(tmp_path).check_free()
    finally:
        lock.release()
    with OutputDirLock(tmp_path) as again:
        assert again.previous_holder == {}  # released cleanly: nothing to take over


def test_sweep_checks_every_job_folder_before_running(tmp_path, capsys) -> None:
    base = tmp_path / "sweep"
    held = OutputDirLock(base / "optimizer.lr=0.03")
    held.acquire()
    try:
        message = _cli_error(
            capsys, "--multirun", "optimizer.lr=0.01,0.03", f"train.output_dir={base}"
        )
    finally:
        held.release()
    assert "optimizer.lr=0.03 is in use by another run" in message
    assert not (base / "optimizer.lr=0.01" / "metrics.json").exists()  # job 0 never started


def test_temporaries_of_a_killed_save_are_removed_at_start(finished_run, tmp_path) -> None:
    output_dir = tmp_path / "run"
    _copy_checkpoints(finished_run, output_dir, ["model_0000014.pth"])
    (output_dir / "last_checkpoint").write_text("model_0000014.pth")
    stale = output_dir / ".model_0000019.pth.tmp.4242.0123abcd"
    stale.write_bytes(b"half a checkpoint")
    _cli(f"train.output_dir={output_dir}", "--resume")
    assert not stale.exists()
    assert "Removed .model_0000019.pth.tmp.4242.0123abcd" in (output_dir / "log.txt").read_text()
    _assert_same_final_weights(output_dir, finished_run)


# ------------------------------------------------------------------------------ --resume


@pytest.mark.parametrize("damage", ["truncated", "empty", "text"])
def test_resume_skips_a_damaged_last_checkpoint(finished_run, tmp_path, caplog, damage) -> None:
    output_dir = tmp_path / "run"
    _copy_checkpoints(finished_run, output_dir, ["model_0000009.pth", "model_0000014.pth"])
    named = output_dir / "model_0000014.pth"
    content = named.read_bytes()
    named.write_bytes(
        {"truncated": content[: len(content) // 2], "empty": b"", "text": b"oops\n"}[damage]
    )
    (output_dir / "last_checkpoint").write_text("model_0000014.pth")
    with caplog.at_level(logging.WARNING, logger="detrex_ext"):
        _cli(f"train.output_dir={output_dir}", "--resume")
    warning = next(r.getMessage() for r in caplog.records if "--resume:" in r.getMessage())
    assert f"{named} is not a checkpoint" in warning
    assert f"Resuming from {output_dir / 'model_0000009.pth'}, the newest intact" in warning
    _assert_same_final_weights(output_dir, finished_run)


@pytest.mark.parametrize("marker", ["", "model_0000099.pth"], ids=["empty", "missing-file"])
def test_resume_with_unusable_last_checkpoint_uses_newest(finished_run, tmp_path, caplog, marker):
    output_dir = tmp_path / "run"
    _copy_checkpoints(finished_run, output_dir, ["model_0000004.pth", "model_0000009.pth"])
    (output_dir / "last_checkpoint").write_text(marker)
    with caplog.at_level(logging.WARNING, logger="detrex_ext"):
        _cli(f"train.output_dir={output_dir}", "--resume")
    warning = next(r.getMessage() for r in caplog.records if "--resume:" in r.getMessage())
    expected = "is empty" if not marker else "names model_0000099.pth, which does not exist"
    assert expected in warning and "model_0000009.pth, the newest intact" in warning
    _assert_same_final_weights(output_dir, finished_run)


def test_resume_with_nothing_intact_lists_what_is_there(tmp_path, capsys) -> None:
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    (output_dir / "model_0000004.pth").write_bytes(b"")
    (output_dir / "last_checkpoint").write_text("model_0000009.pth")
    message = _cli_error(capsys, f"train.output_dir={output_dir}", "--resume")
    assert f"--resume found no intact checkpoint in {output_dir}" in message
    assert "names model_0000009.pth, which does not exist" in message
    assert "model_0000004.pth is not a checkpoint (the file is empty, 0 bytes)" in message
    assert "Files there: model_0000004.pth (0.0 MiB)" in message


def test_resume_of_a_finished_run_says_it_finished(finished_run, tmp_path, caplog) -> None:
    output_dir = tmp_path / "run"
    _copy_checkpoints(finished_run, output_dir, ["model_final.pth"])
    (output_dir / "last_checkpoint").write_text("model_final.pth")
    before = (output_dir / "model_final.pth").read_bytes()
    with caplog.at_level(logging.INFO, logger="detrex_ext"):
        _cli(f"train.output_dir={output_dir}", "--resume")
    assert any("Training already finished" in r.getMessage() for r in caplog.records)
    assert (output_dir / "model_final.pth").read_bytes() == before


def test_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    """The disk fills up in the middle of writing model_0000009.pth."""
    output_dir = tmp_path / "run"
    real_atomic_write = file_io.atomic_write
    saves = []

    class FullDisk:
        def __init__(self, f):
            self._f, self._written = f, 0

        def write(self, data):
            self._written += len(data)
            if self._written > 2000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self._f.write(data)

        def __getattr__(self, name):
            return getattr(self._f, name)

    def failing_second_save(path, mode="wb"):
        context = real_atomic_write(path, mode)
        if not path.endswith(".pth"):
            return context
        saves.append(path)
        if len(saves) != 2:
            return context

        class Wrapped:
            def __enter__(self):
                return FullDisk(context.__enter__())

            def __exit__(self, *exc):
                return context.__exit__(*exc)

        return Wrapped()

    monkeypatch.setattr(detection_checkpoint, "atomic_write", failing_second_save)
    message = _cli_error(capsys, f"train.output_dir={output_dir}")
    assert message.startswith(f"Could not write checkpoint {output_dir / 'model_0000009.pth'}: ")
    assert "No space left on device" in message
    assert f"The previous checkpoint {output_dir / 'model_0000004.pth'} is intact" in message
    assert "--resume" in message
    assert sorted(p.name for p in output_dir.iterdir() if p.suffix == ".pth") == [
        "model_0000004.pth"
    ]
    assert not [p for p in output_dir.iterdir() if ".tmp." in p.name]
    assert (output_dir / "last_checkpoint").read_text() == "model_0000004.pth"
    assert _load(output_dir / "model_0000004.pth")["iteration"] == 4


# ------------------------------------------------------------------------------ --eval-only


def test_eval_only_refuses_a_checkpoint_of_another_model(tmp_path, capsys) -> None:
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {"backbone.conv.weight": torch.zeros(3, 3)}}, foreign)
    message = _cli_error(
        capsys, "--eval-only", f"train.init_checkpoint={foreign}", f"train.output_dir={tmp_path}"
    )
    assert message.startswith(f"0 of 6 model tensors found in {foreign} (6 missing, e.g. ")
    assert "is it a checkpoint of this config?" in message
    assert "train.eval_allow_partial_checkpoint=True" in message
    assert "copypaste" not in capsys.readouterr().out  # nothing was evaluated


def test_eval_only_refuses_partial_and_mismatched_weights(finished_run, tmp_path, capsys):
    weights = _load(finished_run / "model_0000009.pth")["model"]
    weights.pop("fc2.bias")
    weights["fc1.weight"] = torch.zeros(3, 4)
    partial = tmp_path / "partial.pth"
    torch.save({"model": weights}, partial)
    args = ["--eval-only", f"train.init_checkpoint={partial}", f"train.output_dir={tmp_path}"]
    message = _cli_error(capsys, *args)
    assert message.startswith(f"4 of 6 model tensors found in {partial} (1 with another shape, ")
    assert "fc1.weight: (3, 4) in the checkpoint, (16, 4) in the model; 1 missing" in message

    _cli(*args, "train.eval_allow_partial_checkpoint=True")  # explicitly allowed: evaluates
    assert "copypaste" in capsys.readouterr().out


def test_eval_only_without_weights_is_refused(tmp_path, capsys) -> None:
    message = _cli_error(capsys, "--eval-only", f"train.output_dir={tmp_path}")
    assert "--eval-only needs the weights to evaluate: set train.init_checkpoint=" in message
    missing = tmp_path / "nope.pth"
    message = _cli_error(
        capsys, "--eval-only", f"train.init_checkpoint={missing}", f"train.output_dir={tmp_path}"
    )
    assert message == f"Checkpoint {missing} not found"


def test_log_records_the_config_files_sha256(finished_run) -> None:
    """A YAML config can name any callable: the log says exactly which file was run."""
    log = (finished_run / "log.txt").read_text()
    digest = hashlib.sha256(TINY_CONFIG.read_bytes()).hexdigest()
    assert f"Config file {TINY_CONFIG}: sha256 {digest}" in log
    saved = hashlib.sha256((finished_run / "config.yaml").read_bytes()).hexdigest()
    assert f"Full config saved to {finished_run / 'config.yaml'} (sha256 {saved})" in log
