"""CPU thread policy: a process uses at most its share of the CPUs it may run on."""

from __future__ import annotations

import pytest
import torch

from detrex_ext.utils import cpus, openmp, threads
from detrex_ext.utils.openmp import USER_KEYS, busy_machine, choose_wait_policy


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
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(cpus, "_cgroup_cpu_limit", lambda: None)
    assert cpus.available_cpus() == 4
    monkeypatch.setattr(cpus, "_cgroup_cpu_limit", lambda: 2.5)  # 250000 / 100000
    assert cpus.available_cpus() == 2
    monkeypatch.setattr(cpus, "_cgroup_cpu_limit", lambda: 0.5)
    assert cpus.available_cpus() == 1


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
    assert cpus._cgroup_cpu_limit() == 3.0
    fake_open.content = "max 100000\n"
    assert cpus._cgroup_cpu_limit() is None


def test_predictor_on_cpu_applies_the_policy(monkeypatch):
    from detrex_ext.engine.predictor import Predictor

    torch.set_num_threads(3)
    monkeypatch.setattr(threads, "available_cpus", lambda: 1)
    Predictor(torch.nn.Linear(1, 1))
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("tool", ["train_net", "demo", "benchmark"])
def test_launch_tools_make_openmp_threads_wait_passively_on_a_busy_machine(tool):
    """The launch tools set OMP_WAIT_POLICY=PASSIVE before torch (and its OpenMP runtime) is
    loaded when the load average at start is at least the usable CPUs, leave OpenMP's default
    (spinning) on a quiet machine, and never override a wait policy or spin count the user set."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]

    def run(load: float, extra: dict[str, str]) -> list[str]:
        probe = (
            "import os, runpy, sys\n"
            f"os.getloadavg = lambda: ({load}, 0.0, 0.0)\n"
            f"runpy.run_path({str(root / 'tools' / (tool + '.py'))!r}, run_name='probe')\n"
            "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))\n"
        )
        env = {k: v for k, v in os.environ.items() if k not in USER_KEYS}
        proc = subprocess.run(
            [sys.executable, "-c", probe], env={**env, **extra}, capture_output=True, text=True
        )
        return proc.stdout.split()[-2:]

    busy = float(len(os.sched_getaffinity(0)))
    assert run(busy, {}) == ["PASSIVE", "None"]
    assert run(0.0, {}) == ["None", "None"]
    assert run(busy, {"GOMP_SPINCOUNT": "1000"}) == ["None", "1000"]
    assert run(busy, {"OMP_WAIT_POLICY": "ACTIVE"}) == ["ACTIVE", "None"]


def test_wait_policy_follows_the_load_and_the_user():
    assert choose_wait_policy({}, 2.0, 2) == "PASSIVE"  # every CPU taken
    assert choose_wait_policy({}, 1.9, 2) is None
    assert choose_wait_policy({}, None, 2) is None  # no load average: OpenMP's default
    assert choose_wait_policy({"OMP_WAIT_POLICY": "ACTIVE"}, 9.0, 2) is None
    assert choose_wait_policy({"GOMP_SPINCOUNT": "0"}, 9.0, 2) is None
    environ: dict[str, str] = {}
    assert busy_machine(4.0, 4) and not busy_machine(3.5, 4)
    assert choose_wait_policy(environ, 0.1, 1) is None and environ == {}


def test_wait_policy_counts_the_cpus_the_process_may_use(monkeypatch):
    """The busy test compares the load with ``available_cpus`` (affinity and cgroup quota), the
    count the thread setting uses, not the machine's CPUs."""
    monkeypatch.setattr(openmp.os, "getloadavg", lambda: (1.0, 0.0, 0.0))
    monkeypatch.setattr(openmp, "available_cpus", lambda: 1)  # e.g. a 1-CPU cgroup quota
    environ: dict[str, str] = {}
    assert openmp.set_wait_policy_for_load(environ) == "PASSIVE"
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    monkeypatch.setattr(openmp, "available_cpus", lambda: 2)
    environ = {}
    assert openmp.set_wait_policy_for_load(environ) is None and environ == {}
