"""detrex_ext.utils.comm: single-process answers and a real 2-process gloo group."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detrex_ext.utils import comm


def test_single_process_answers() -> None:
    assert comm.get_world_size() == 1
    assert comm.get_rank() == 0 and comm.get_local_rank() == 0 and comm.is_main_process()
    assert comm.all_gather({"a": 1}) == [{"a": 1}]
    assert comm.gather(3) == [3]
    t = torch.tensor([2.0])
    assert comm.all_reduce_sum(t).item() == 2.0
    losses = {"x": torch.tensor(1.5)}
    assert comm.reduce_dict(losses) is losses
    comm.synchronize()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _native_thread_names() -> list[str]:
    """Names of all OS threads of this process, including C++ ones Python cannot see."""
    task_dir = "/proc/self/task"
    names = []
    for tid in os.listdir(task_dir):
        try:
            with open(os.path.join(task_dir, tid, "comm")) as f:
                names.append(f.read().strip())
        except FileNotFoundError:  # the thread ended while we listed
            pass
    return names


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        gathered = comm.all_gather(("rank", rank))
        on_zero = comm.gather(rank * 10)
        summed = comm.all_reduce_sum(torch.tensor([rank + 1.0])).item()
        reduced = comm.reduce_dict({"b": torch.tensor(float(rank)), "a": torch.tensor(4.0)})
        seed = comm.shared_random_seed()
        result = dict(
            gathered=gathered,
            on_zero=on_zero,
            summed=summed,
            seed=seed,
            reduced={k: v.item() for k, v in reduced.items()},
        )
        comm.synchronize()
    finally:
        comm.destroy_process_group()
    # gloo's worker threads must be gone once the group is destroyed: left running into
    # interpreter shutdown they abort the process now and then
    result["gloo_threads_after_destroy"] = [n for n in _native_thread_names() if "gloo" in n]
    result["initialized_after_destroy"] = comm.is_dist_initialized()
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))


def test_two_process_gloo(tmp_path) -> None:
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["gathered"] == r1["gathered"] == [("rank", 0), ("rank", 1)]
    assert r0["on_zero"] == [0, 10] and r1["on_zero"] == []
    assert r0["summed"] == r1["summed"] == 3.0
    assert r0["seed"] == r1["seed"]
    # rank 0 holds the averaged values: b = (0 + 1) / 2, a = (4 + 4) / 2
    assert r0["reduced"] == {"a": 4.0, "b": 0.5}
    for r in (r0, r1):
        assert r["gloo_threads_after_destroy"] == [] and not r["initialized_after_destroy"]
