"""OpenMP's wait policy for the launch tools, chosen before torch loads its OpenMP runtime.

Idle OpenMP worker threads spin for a while before they sleep (the runtime's default). On a quiet
machine that is the fast choice: a thread that spins picks up the next parallel region at once
(the demo config, 2 threads on a quiet 2-core machine: 0.20-0.23 s/iteration spinning, 0.41-0.43
s sleeping). On a machine whose CPUs are all busy with other work, spinning threads take the CPU
from the threads they wait for and every parallel operator waits out scheduler time slices (2
threads on a loaded 2-core machine: demo iteration 6-12 s spinning, 0.32 s sleeping). So the tools
make idle threads sleep (``OMP_WAIT_POLICY=PASSIVE``) only when the machine is busy at start: its
1-minute load average is at least the number of CPUs this process may use. A wait policy or spin
count the user set always wins. Only effective before torch is imported.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from .cpus import available_cpus

__all__ = ["busy_machine", "choose_wait_policy", "set_wait_policy_for_load"]

USER_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def busy_machine(load_1min: float | None, cpus: int) -> bool:
    """Whether the CPUs are all taken by other work (unknown load: not busy)."""
    return load_1min is not None and load_1min >= cpus


def choose_wait_policy(
    environ: MutableMapping[str, str], load_1min: float | None, cpus: int
) -> str | None:
    """``"PASSIVE"`` to set, or None to leave OpenMP's default (or the user's choice) alone."""
    if any(key in environ for key in USER_KEYS):
        return None
    return "PASSIVE" if busy_machine(load_1min, cpus) else None


def set_wait_policy_for_load(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` in ``environ`` when the machine is busy now; returns
    what was set (None: nothing)."""
    try:
        load: float | None = os.getloadavg()[0]
    except (OSError, AttributeError):  # no load average on this OS
        load = None
    policy = choose_wait_policy(environ, load, available_cpus())
    if policy is not None:
        environ["OMP_WAIT_POLICY"] = policy
    return policy
