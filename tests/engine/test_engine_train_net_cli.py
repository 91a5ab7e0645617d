"""tools/train_net.py end to end on the tiny config (CPU subprocesses): outputs, a real kill and
--resume, --eval-only, --print-config, a --multirun sweep and a 2-process gloo run."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from engine_helpers import (
    REPO_ROOT,
    TINY_CONFIG,
    TRAIN_NET,
    run_train_net,
    subprocess_env,
    train_net_command,
)
from engine_tiny_task import TinyRegressor, make_samples

from detrex_ext.config import LazyConfig, instantiate
from detrex_ext.engine.runner import do_eval_only, do_train
from detrex_ext.utils.env import seed_all_rng


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]


def _last_per_iteration(lines: list[dict]) -> dict[int, dict]:
    """After a resume, metrics.json repeats iterations; the later line is the finished run's."""
    return {line["iteration"]: line for line in lines}


def _expected_mse(weights: dict[str, torch.Tensor]) -> float:
    model = TinyRegressor()
    model.load_state_dict(weights)
    model.eval()
    samples = make_samples(10, seed=99)
    with torch.no_grad():
        preds = torch.stack([o["pred"] for o in model(samples)])
    targets = torch.stack([s["y"] for s in samples])
    return ((preds - targets) ** 2).mean(dim=1).mean().item()


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """An uninterrupted 20-iteration run."""
    output_dir = tmp_path_factory.mktemp("train_net") / "full"
    run_train_net("train.max_iter=20", f"train.output_dir={output_dir}")
    return output_dir


def test_run_writes_checkpoints_metrics_config_and_logs(reference_run: Path) -> None:
    names = sorted(p.name for p in reference_run.glob("*.pth"))
    assert names == [
        "model_0000004.pth",
        "model_0000009.pth",
        "model_0000014.pth",
        "model_0000019.pth",
        "model_final.pth",
    ]
    assert (reference_run / "last_checkpoint").read_text() == "model_final.pth"
    final = _load(reference_run / "model_final.pth")
    assert final["iteration"] == 19 and final["trainer"]["iteration"] == 19
    assert set(final) == {"model", "trainer", "ema_state", "iteration"}
    assert {"optimizer", "data_loader", "iteration_seed"} <= set(final["trainer"])

    lines = _metrics(reference_run)
    # 0..19, the evaluation at 9 on a line of its own (iteration 9's line went out before its
    # checkpoint, the evaluation runs after it), the final evaluation at 20
    iterations = [line["iteration"] for line in lines]
    assert iterations == [*range(10), 9, *range(10, 21)]
    assert [line["iteration"] for line in lines if "tiny/mse" in line] == [9, 20]
    assert all(math_ok(line["total_loss"]) for line in lines if "tiny/mse" not in line)
    assert lines[-1]["tiny/mse"] == pytest.approx(_expected_mse(final["model"]), rel=1e-5)
    assert lines[-1]["tiny_ema/mse"] == pytest.approx(_expected_mse(final["ema_state"]), rel=1e-5)

    cfg = LazyConfig.load(str(reference_run / "config.yaml"))
    assert cfg.train.max_iter == 20 and cfg.train.output_dir == str(reference_run)
    assert isinstance(instantiate(cfg.model), TinyRegressor)
    log = (reference_run / "log.txt").read_text()
    assert "Environment info" in log and torch.__version__ in log and "Full config saved" in log
    assert list(reference_run.glob("events.out.tfevents.*"))


def math_ok(value: float) -> bool:
    return value == value and abs(value) < 1e6


def test_kill_after_first_checkpoint_then_resume_matches_uninterrupted_run(
    reference_run: Path, tmp_path: Path
) -> None:
    output_dir = tmp_path / "killed"
    # slow training down (0.25 s per iteration) so that the kill lands mid-run
    proc = subprocess.Popen(
        train_net_command("model.step_sleep=0.25", f"train.output_dir={output_dir}"),
        env=subprocess_env(),
        cwd=str(REPO_ROOT),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (output_dir / "last_checkpoint").exists():
            assert proc.poll() is None, "the run ended before writing a checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not (output_dir / "model_final.pth").exists(), "the run finished before the kill"
    resumed_from = int(re.search(r"(\d+)", (output_dir / "last_checkpoint").read_text()).group(1))

    result = run_train_net("--resume", f"train.output_dir={output_dir}")
    assert f"Resumed from iteration {resumed_from}; continuing at {resumed_from + 1}" in (
        result.stdout
    )
    ours, reference = (
        _load(output_dir / "model_final.pth"),
        _load(reference_run / "model_final.pth"),
    )
    for section in ("model", "ema_state"):
        for key, value in reference[section].items():
            assert torch.equal(ours[section][key], value), (section, key)
    reference_optimizer = reference["trainer"]["optimizer"]["state"]
    for index, state in ours["trainer"]["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg_sq"], reference_optimizer[index]["exp_avg_sq"])

    ours_lines = _last_per_iteration(_metrics(output_dir))
    reference_lines = _last_per_iteration(_metrics(reference_run))
    assert sorted(ours_lines) == sorted(reference_lines)
    for iteration, line in reference_lines.items():
        for key in ("total_loss", "loss_mse", "loss_l1", "lr", "tiny/mse"):
            if key in line:
                assert ours_lines[iteration][key] == line[key], (iteration, key)


def test_eval_only_evaluates_init_checkpoint(reference_run: Path, tmp_path: Path) -> None:
    checkpoint = reference_run / "model_0000009.pth"
    result = run_train_net(
        "--eval-only", f"train.init_checkpoint={checkpoint}", f"train.output_dir={tmp_path}"
    )
    values = re.findall(r"copypaste: ([\d.]+),([\d.]+),([\d.]+)", result.stdout)
    assert len(values) == 1  # one evaluation, raw weights only
    mse, count, _ = map(float, values[0])
    assert count == 10
    assert mse == pytest.approx(_expected_mse(_load(checkpoint)["model"]), abs=1e-4)
    assert not list(tmp_path.glob("*.pth"))  # nothing trained, nothing saved


def test_eval_only_with_ema_weights(reference_run: Path, tmp_path: Path, one_thread) -> None:
    checkpoint = reference_run / "model_0000009.pth"
    cfg = LazyConfig.apply_overrides(
        LazyConfig.load(str(TINY_CONFIG)),
        [
            f"train.init_checkpoint={checkpoint}",
            f"train.output_dir={tmp_path}",
            "train.model_ema.use_ema_weights_for_eval_only=True",
        ],
    )
    results = do_eval_only(cfg)
    expected = _expected_mse(_load(checkpoint)["ema_state"])
    assert results["tiny"]["mse"] == pytest.approx(expected, rel=1e-6)
    assert expected != pytest.approx(_expected_mse(_load(checkpoint)["model"]), rel=1e-3)


def _train_net_module():
    spec = importlib.util.spec_from_file_location("train_net_under_test", TRAIN_NET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_print_config_prints_resolved_overridden_config_and_exits(tmp_path: Path, capsys) -> None:
    output_dir = tmp_path / "never_created"
    _train_net_module().cli(
        [
            "--config-file",
            str(TINY_CONFIG),
            "--print-config",
            "optimizer.lr=0.5",
            f"train.output_dir={output_dir}",
        ]
    )
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optimizer"]["lr"] == 0.5
    assert printed["optimizer"]["_target_"] == "torch.optim.AdamW"
    assert printed["dataloader"]["train"]["seed"] == 42  # "${train.seed}" resolved
    assert printed["train"]["wandb"]["params"]["dir"] == f"{output_dir}/wandb"
    assert not output_dir.exists()


def test_sweep_runs_one_job_per_value_in_its_own_folder(tmp_path: Path) -> None:
    base = tmp_path / "sweep"
    result = run_train_net(
        "--multirun", "optimizer.lr=0.01,0.03", "train.max_iter=3", f"train.output_dir={base}"
    )
    assert "2 job(s)" in result.stdout
    folders = sorted(p.name for p in base.iterdir())
    assert folders == ["optimizer.lr=0.01", "optimizer.lr=0.03"]
    last_lr = {}
    for folder in folders:
        job_dir = base / folder
        cfg = LazyConfig.load(str(job_dir / "config.yaml"))
        assert cfg.train.output_dir == str(job_dir) and cfg.train.max_iter == 3
        assert (job_dir / "model_final.pth").exists()
        last_lr[cfg.optimizer.lr] = _metrics(job_dir)[2]["lr"]
    assert last_lr[0.03] == pytest.approx(3 * last_lr[0.01])


def test_sweep_without_multirun_is_refused() -> None:
    with pytest.raises(SystemExit, match="--multirun"):
        _train_net_module().cli(["--config-file", str(TINY_CONFIG), "optimizer.lr=0.01,0.03"])


def test_two_process_gloo_run_matches_one_process_with_the_global_batch(
    tmp_path: Path, one_thread
) -> None:
    """2 CPU processes x 4 samples == 1 process x 8 samples (DDP averages the gradients), and
    the evaluation gathers both ranks' shards on rank 0."""
    common = ["train.max_iter=6", "model.dropout=0.0"]
    run_train_net(
        "--num-gpus", "2", "--dist-url", "auto", *common, f"train.output_dir={tmp_path / 'ddp'}"
    )
    ddp_dir = tmp_path / "ddp"
    assert (ddp_dir / "log.txt.rank1").exists()
    assert "Rank of current process: 1. World size: 2" in (ddp_dir / "log.txt.rank1").read_text()
    final_eval = _metrics(ddp_dir)[-1]
    assert final_eval["tiny/count"] == 10 and final_eval["tiny/distinct"] == 10

    cfg = LazyConfig.apply_overrides(
        LazyConfig.load(str(TINY_CONFIG)),
        [*common, "dataloader.train.batch_size=8", f"train.output_dir={tmp_path / 'single'}"],
    )
    seed_all_rng(cfg.train.seed)  # what default_setup does on rank 0, which DDP broadcasts
    do_train(argparse.Namespace(resume=False), cfg)
    ddp = _load(ddp_dir / "model_final.pth")["model"]
    single = _load(tmp_path / "single" / "model_final.pth")["model"]
    for key, value in single.items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-5, atol=1e-6)
    assert not torch.equal(
        ddp["fc1.weight"], _load(ddp_dir / "model_0000004.pth")["model"]["fc1.weight"]
    )
