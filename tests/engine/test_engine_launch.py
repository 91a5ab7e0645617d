"""Launcher plumbing: torchrun/Slurm environment detection (and a real torchrun run), sweep
expansion and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from engine_helpers import REPO_ROOT, TINY_CONFIG, TRAIN_NET, subprocess_env

from detrex_ext.engine import default_argument_parser
from detrex_ext.engine.launch import DistEnv, detect_external_launcher
from detrex_ext.engine.multirun import expand_sweep, find_sweep_overrides


def test_torchrun_environment_is_detected() -> None:
    env = {
        "RANK": "3",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "node7",
        "MASTER_PORT": "29512",
    }
    assert detect_external_launcher(env) == DistEnv(3, 8, 1, 2, "node7", 29512, "torchrun")


def test_slurm_environment_is_detected_and_the_master_is_the_first_node(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "")  # no scontrol: the node list is parsed here
    env = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_TASKS_PER_NODE": "4(x2)",
        "SLURM_JOB_NODELIST": "gpu[012-013,020],cpu1",
        "SLURM_JOB_ID": "123456",
    }
    found = detect_external_launcher(env)
    assert (found.rank, found.world_size, found.local_rank) == (5, 8, 1)
    assert found.local_world_size == 4 and found.master_addr == "gpu012"
    assert found.master_port == 10000 + 123456 % 20000 and found.source == "slurm"
    explicit = detect_external_launcher({**env, "MASTER_ADDR": "head", "MASTER_PORT": "1234"})
    assert (explicit.master_addr, explicit.master_port) == ("head", 1234)


def test_single_task_slurm_job_and_plain_processes_are_not_distributed() -> None:
    assert detect_external_launcher({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None
    assert detect_external_launcher({}) is None


def test_sweep_expansion_is_a_cartesian_product_in_command_line_order() -> None:
    jobs = expand_sweep(["optimizer.lr=0.1,0.2", "train.max_iter=5", "train.seed=range(1,3)"])
    assert [job.swept for job in jobs] == [
        [("optimizer.lr", "0.1"), ("train.seed", "1")],
        [("optimizer.lr", "0.1"), ("train.seed", "2")],
        [("optimizer.lr", "0.2"), ("train.seed", "1")],
        [("optimizer.lr", "0.2"), ("train.seed", "2")],
    ]
    assert jobs[1].overrides == ["train.max_iter=5", "optimizer.lr=0.1", "train.seed=2"]
    assert jobs[1].dirname == "optimizer.lr=0.1,train.seed=2"
    assert expand_sweep(["a=1", "b='x,y'"])[0].swept == []  # a quoted comma is one value
    assert find_sweep_overrides(["a=1", "b=2,3"]) == ["b=2,3"]
    with pytest.raises(ValueError, match="enumerate"):
        expand_sweep(["a=interval(0,1)"])


def test_flags_may_follow_overrides_and_defaults_match_detrex() -> None:
    args = default_argument_parser().parse_args(
        ["--config-file", "c.py", "a.b=1", "--resume", "c=-2", "--num-gpus", "4"]
    )
    assert args.resume and args.num_gpus == 4 and args.opts == ["a.b=1", "c=-2"]
    defaults = default_argument_parser().parse_args([])
    assert (defaults.num_gpus, defaults.num_machines, defaults.machine_rank) == (1, 1, 0)
    assert defaults.dist_url.startswith("tcp://127.0.0.1:") and defaults.opts == []
    assert not (defaults.eval_only or defaults.print_config or defaults.multirun)


def test_torchrun_launch_joins_the_torchrun_group(tmp_path: Path) -> None:
    output_dir = tmp_path / "torchrun"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--master-port=0",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=127.0.0.1:0",
        str(TRAIN_NET),
        "--config-file",
        str(TINY_CONFIG),
        "train.max_iter=2",
        "train.eval_period=0",
        f"train.output_dir={output_dir}",
    ]
    proc = subprocess.run(
        command,
        env=subprocess_env(),
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rank1_log = (output_dir / "log.txt.rank1").read_text()
    assert "Rank of current process: 1. World size: 2" in rank1_log
    final = json.loads((output_dir / "metrics.json").read_text().splitlines()[-1])
    assert final["tiny/count"] == 10
