"""glibc malloc settings of the training launcher (detrex_ext.utils.malloc)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from detrex_ext.utils import malloc

ROOT = Path(__file__).resolve().parents[2]
GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")

# Twelve training steps of a small conv net (8 MiB activations); prints the minor page faults of
# steps 4..12 (the first ones grow the heap). With glibc's defaults freed blocks go back to the system (unmapped, or trimmed off the
# top of the heap) and are faulted in again, zero-filled, in the next step; kept, they are reused.
_STEPS_PROBE = """
import resource
{setup}
import torch
torch.manual_seed(0)
net = torch.nn.Sequential(
    torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
    torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(),
    torch.nn.Flatten(), torch.nn.Linear(32 * 64 * 64, 10),
)
optimizer = torch.optim.AdamW(net.parameters())
images = torch.randn(16, 3, 64, 64)
faults = []
for step in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    loss = net(images).square().sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults[3:])
"""


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not malloc.user_malloc_settings({k: v})}


def _step_faults(setup: str, env: dict[str, str]) -> list[int]:
    proc = subprocess.run(
        [sys.executable, "-c", _STEPS_PROBE.format(setup=setup)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return [int(n) for n in proc.stdout.split()[-9:]]


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_kept_memory_is_reused_without_page_faults():
    """Independent expectation: one 8 MiB activation faulted in again is 2048 pages of 4 KiB
    (the default re-faults several per step); memory reused from the heap needs none, so the
    typical (median) step faults a handful of pages at most, and all steps together a small
    share of the default's (the heap still grows now and then: which block is free when varies
    with the OpenMP threads' allocations)."""
    env = _clean_env()
    default = sorted(_step_faults("", env))
    kept = sorted(
        _step_faults(
            "from detrex_ext.utils.malloc import keep_freed_memory\nassert keep_freed_memory()",
            env,
        )
    )
    assert default[4] > 2048, default
    assert kept[4] < 64 and sum(kept) * 8 < sum(default), (kept, default)


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_train_net_keeps_freed_memory_unless_the_user_set_malloc_variables():
    """The launcher applies the settings at import (before any training), exports them for the
    processes it starts, and leaves malloc alone when the user set a malloc variable."""
    probe = (
        "import os, runpy\n"
        f"runpy.run_path({str(ROOT / 'tools' / 'train_net.py')!r}, run_name='probe')\n"
        "print([os.environ.get(name) for _, name, _ in "
        "__import__('detrex_ext.utils.malloc').utils.malloc.KEEP_FREED_SETTINGS])\n"
    )

    def run(extra: dict[str, str]) -> str:
        proc = subprocess.run(
            [sys.executable, "-c", probe],
            env={**_clean_env(), **extra},
            capture_output=True,
            text=True,
            check=True,
        )
        return proc.stdout.strip().splitlines()[-1]

    assert run({}) == str(["0", str(2**31 - 1), str(256 << 20)])
    assert run({"MALLOC_TRIM_THRESHOLD_": "131072"}) == str([None, "131072", None])


def test_user_settings_win_and_other_c_libraries_are_left_alone(monkeypatch):
    environ = {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1", "PATH": "/bin"}
    assert malloc.user_malloc_settings(environ) == ["GLIBC_TUNABLES"]
    assert not malloc.keep_freed_memory(environ)
    assert environ == {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1", "PATH": "/bin"}
    assert malloc.user_malloc_settings({"MALLOC_ARENA_MAX_": "2", "MALLOC": "x"}) == [
        "MALLOC_ARENA_MAX_"
    ]

    monkeypatch.setattr(malloc, "_glibc", lambda: None)  # musl, macOS, Windows
    environ = {}
    assert not malloc.keep_freed_memory(environ) and environ == {}


def test_collected_environment_names_the_malloc_settings(monkeypatch):
    from detrex_ext.utils.env import collect_env_info

    for key in malloc.user_malloc_settings(os.environ):
        monkeypatch.delenv(key)
    assert "<C library defaults>" in collect_env_info()
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "0")
    assert "MALLOC_MMAP_MAX_=0" in collect_env_info()
