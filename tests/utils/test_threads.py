"""CPU thread policy: a process uses at most its share of the CPUs it may run on."""

from __future__ import annotations

import pytest
import torch

from detrex_ext.utils import threads


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    yield
    torch.set_num_threads(before)


def test_lowered_to_the_available_cpus_never_raised(monkeypatch):
    torch.set_num_threads(4)
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    assert threads.configure_cpu_threads() == 2 and torch.get_num_threads() == 2
    monkeypatch.setattr(threads, "available_cpus", lambda: 8)
    assert threads.configure_cpu_threads() == 2 and torch.get_num_threads() == 2  # not raised


def test_processes_share_the_cpus_and_user_choices_win(monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 8)
    torch.set_num_threads(8)
    assert threads.configure_cpu_threads(processes_per_machine=3) == 2
    torch.set_num_threads(8)
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    assert threads.configure_cpu_threads(processes_per_machine=3) == 8
    assert threads.configure_cpu_threads(num_threads=3) == 3 and torch.get_num_threads() == 3
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        threads.configure_cpu_threads(num_threads=0)


def test_available_cpus_follows_affinity_and_cgroup_quota(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "_cgroup_cpu_limit", lambda: None)
    assert threads.available_cpus() == 4
    monkeypatch.setattr(threads, "_cgroup_cpu_limit", lambda: 2.5)  # 250000 / 100000
    assert threads.available_cpus() == 2
    monkeypatch.setattr(threads, "_cgroup_cpu_limit", lambda: 0.5)
    assert threads.available_cpus() == 1


def test_cgroup_v2_quota_is_read(monkeypatch, tmp_path):
    real_open = open

    def fake_open(path, *args, **kwargs):
        if path == "/sys/fs/cgroup/cpu.max":
            target = tmp_path / "cpu.max"
            target.write_text(fake_open.content)
            return real_open(target, *args, **kwargs)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    fake_open.content = "300000 100000\n"
    assert threads._cgroup_cpu_limit() == 3.0
    fake_open.content = "max 100000\n"
    assert threads._cgroup_cpu_limit() is None


def test_predictor_on_cpu_applies_the_policy(monkeypatch):
    from detrex_ext.engine.predictor import Predictor

    torch.set_num_threads(3)
    monkeypatch.setattr(threads, "available_cpus", lambda: 1)
    Predictor(torch.nn.Linear(1, 1))
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("tool", ["train_net", "demo", "benchmark"])
def test_launch_tools_make_openmp_threads_wait_passively(tool):
    """The launch tools set OMP_WAIT_POLICY=PASSIVE before torch (and its OpenMP runtime) is
    loaded, unless the user chose a wait policy or spin count."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    probe = (
        "import os, runpy, sys\n"
        f"runpy.run_path({str(root / 'tools' / (tool + '.py'))!r}, run_name='probe')\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    run = lambda extra: subprocess.run(  # noqa: E731
        [sys.executable, "-c", probe], env={**env, **extra}, capture_output=True, text=True
    )
    assert run({}).stdout.split()[-2:] == ["PASSIVE", "None"]
    assert run({"GOMP_SPINCOUNT": "1000"}).stdout.split()[-2:] == ["None", "1000"]
    assert run({"OMP_WAIT_POLICY": "ACTIVE"}).stdout.split()[-2:] == ["ACTIVE", "None"]
