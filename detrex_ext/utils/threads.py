"""CPU thread count for torch's intra-op parallelism.

torch starts one thread per physical core of the machine. In a container or under ``taskset``
the process may own far fewer CPUs (a cgroup quota, an affinity mask): more threads than CPUs make
every parallel operator wait for descheduled threads (on a loaded 2-CPU machine the demo's
training iteration ran ~10x slower with 2 threads than with 1). Several processes on one machine
(``--num-gpus N`` on CPU) should share the CPUs instead of each taking all of them.
"""

from __future__ import annotations

import logging
import os

import torch

from .cpus import available_cpus

__all__ = ["available_cpus", "configure_cpu_threads"]

logger = logging.getLogger(__name__)

_USER_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def configure_cpu_threads(num_threads: int | None = None, processes_per_machine: int = 1) -> int:
    """Set torch's intra-op thread count for CPU work and return it.

    ``num_threads`` given: exactly that. Otherwise, unless the user chose through
    ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` (then torch's count is kept), the count is lowered
    to this process's share of :func:`available_cpus` (divided among ``processes_per_machine``)
    when torch's default is higher; it is never raised.
    """
    if num_threads is not None:
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        torch.set_num_threads(num_threads)
        return num_threads
    current = torch.get_num_threads()
    user = [name for name in _USER_VARIABLES if os.environ.get(name)]
    if user:
        logger.info(f"CPU threads: {current} ({', '.join(user)} is set)")
        return current
    share = max(1, available_cpus() // max(1, processes_per_machine))
    if share < current:
        torch.set_num_threads(share)
        logger.info(
            f"CPU threads: {share} (torch's default was {current}; this process may use "
            f"{available_cpus()} CPU(s), shared by {processes_per_machine} process(es))"
        )
        return share
    return current
