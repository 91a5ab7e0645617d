"""``launch``: run a main function on one process or on one process per GPU.

Three ways to get several processes:

1. ``launch`` spawns them itself: ``--num-gpus N`` processes on this machine (one per GPU with
   NCCL; without CUDA, N CPU processes with gloo), ``--num-machines``/``--machine-rank`` and
   ``--dist-url`` for several machines.
2. ``torchrun`` started them: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``,
   ``MASTER_PORT``, ``LOCAL_WORLD_SIZE``) are in the environment; ``launch`` joins that group.
3. ``srun`` started one task per GPU: ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID`` and the
   node list give the same information (master = first node of the job unless ``MASTER_ADDR``).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detrex_ext.utils import comm

__all__ = ["DEFAULT_TIMEOUT", "launch", "DistEnv", "detect_external_launcher", "default_dist_url"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class DistEnv:
    """Process coordinates given by an external launcher (torchrun or Slurm)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int
    source: str


def _find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def default_dist_url() -> str:
    """``tcp://127.0.0.1:<port>`` with a port derived from the user id (detectron2's choice): a
    stale job of the same user shows up as "address in use" instead of joining the new one."""
    uid = os.getuid() if hasattr(os, "getuid") else 1
    port = 2**15 + 2**14 + hash(uid) % 2**14
    return f"tcp://127.0.0.1:{port}"


def _first_slurm_host(nodelist: str) -> str:
    """First hostname of a Slurm node list such as ``gpu[012-015,020],cpu1``."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass  # no scontrol here: parse the common forms ourselves
    first = re.split(r",(?![^\[]*\])", nodelist)[0]
    match = re.fullmatch(r"(.*?)\[([^\]]+)\](.*)", first)
    if match is None:
        return first
    prefix, ranges, suffix = match.groups()
    return prefix + ranges.split(",")[0].split("-")[0] + suffix


def _slurm_tasks_per_node(environ: Mapping[str, str], world_size: int) -> int:
    if "SLURM_NTASKS_PER_NODE" in environ:
        return int(environ["SLURM_NTASKS_PER_NODE"])
    # SLURM_TASKS_PER_NODE looks like "4(x2)" or "4,4"
    tasks = environ.get("SLURM_TASKS_PER_NODE", "")
    match = re.match(r"(\d+)", tasks)
    return int(match.group(1)) if match else world_size


def detect_external_launcher(environ: Mapping[str, str] | None = None) -> DistEnv | None:
    """The process coordinates set by torchrun or Slurm, or None when this process was started
    directly (then ``launch`` spawns processes itself).

    A Slurm job with a single task is not treated as distributed: ``launch`` may then spawn one
    process per GPU inside that task.
    """
    env = os.environ if environ is None else environ
    if all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        world_size = int(env["WORLD_SIZE"])
        return DistEnv(
            rank=int(env["RANK"]),
            world_size=world_size,
            local_rank=int(env["LOCAL_RANK"]),
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", world_size)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", 29500)),
            source="torchrun",
        )
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        world_size = int(env["SLURM_NTASKS"])
        nodelist = env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", "127.0.0.1"))
        job_id = int(re.sub(r"\D", "", env.get("SLURM_JOB_ID", "0")) or 0)
        return DistEnv(
            rank=int(env["SLURM_PROCID"]),
            world_size=world_size,
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            local_world_size=_slurm_tasks_per_node(env, world_size),
            master_addr=env.get("MASTER_ADDR") or _first_slurm_host(nodelist),
            master_port=int(env.get("MASTER_PORT", 10000 + job_id % 20000)),
            source="slurm",
        )
    return None


def _create_local_process_group(machine_rank: int, num_machines: int, procs_per_machine: int):
    """Every rank creates every machine's group (a collective), and keeps its own."""
    for machine in range(num_machines):
        ranks = list(range(machine * procs_per_machine, (machine + 1) * procs_per_machine))
        group = dist.new_group(ranks)
        if machine == machine_rank:
            comm.set_local_process_group(group)


def _init_and_run(
    main_func: Callable,
    args: Sequence[Any],
    *,
    rank: int,
    world_size: int,
    local_rank: int,
    procs_per_machine: int,
    init_method: str,
    timeout: timedelta,
) -> None:
    has_gpu = torch.cuda.is_available()
    if has_gpu:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"Process with local rank {local_rank} has no GPU: only "
                f"{torch.cuda.device_count()} visible. Lower --num-gpus or fix CUDA_VISIBLE_DEVICES."
            )
        torch.cuda.set_device(local_rank)
    backend = "nccl" if has_gpu else "gloo"
    dist.init_process_group(
        backend, init_method=init_method, world_size=world_size, rank=rank, timeout=timeout
    )
    try:
        num_machines = max(world_size // procs_per_machine, 1)
        _create_local_process_group(rank // procs_per_machine, num_machines, procs_per_machine)
        comm.synchronize()
        main_func(*args)
    finally:
        comm.destroy_process_group()


def _spawned_worker(
    local_rank: int,
    main_func: Callable,
    world_size: int,
    procs_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: Sequence[Any],
    timeout: timedelta,
) -> None:
    _init_and_run(
        main_func,
        args,
        rank=machine_rank * procs_per_machine + local_rank,
        world_size=world_size,
        local_rank=local_rank,
        procs_per_machine=procs_per_machine,
        init_method=dist_url,
        timeout=timeout,
    )


def launch(
    main_func: Callable,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args: Sequence[Any] = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Run ``main_func(*args)`` in every process of the job.

    Args:
        main_func: a picklable (module-level) function.
        num_gpus_per_machine: processes per machine (one per GPU; CPU processes without CUDA).
        num_machines: number of machines.
        machine_rank: this machine's index.
        dist_url: rendezvous, e.g. ``tcp://host:port``; ``"auto"`` picks a free local port
            (single machine only); None uses ``default_dist_url()``.
        args: arguments of ``main_func``.
        timeout: for collectives (the default 30 minutes covers long evaluations).
    """
    external = detect_external_launcher()
    if external is not None and external.world_size > 1:
        requested = num_gpus_per_machine * num_machines
        if requested not in (1, external.world_size):
            logger.warning(
                f"--num-gpus/--num-machines ask for {requested} processes but {external.source} "
                f"started {external.world_size}; following {external.source}."
            )
        os.environ.setdefault("MASTER_ADDR", external.master_addr)
        os.environ.setdefault("MASTER_PORT", str(external.master_port))
        _init_and_run(
            main_func,
            args,
            rank=external.rank,
            world_size=external.world_size,
            local_rank=external.local_rank,
            procs_per_machine=external.local_world_size,
            init_method="env://",
            timeout=timeout,
        )
        return

    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        main_func(*args)
        return
    if torch.cuda.is_available() and num_gpus_per_machine > torch.cuda.device_count():
        raise RuntimeError(
            f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} GPUs are "
            "visible on this machine."
        )
    if dist_url is None:
        dist_url = default_dist_url()
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("--dist-url=auto only works with one machine; give tcp://host:port")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if num_machines > 1 and dist_url.startswith("tcp://127.0.0.1"):
        logger.warning("A multi-machine job with --dist-url on 127.0.0.1 cannot rendezvous.")
    if not torch.cuda.is_available():
        logger.info(f"No CUDA: running {num_gpus_per_machine} CPU processes with gloo.")
    mp.start_processes(
        _spawned_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
        start_method="spawn",
    )
    sys.stdout.flush()
