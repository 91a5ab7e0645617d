"""A tiny regression task with detectron2's I/O conventions, for the engine tests.

- ``TinyRegressor``: ``list[dict(x=[4], y=[2])]`` in; a loss dict in training (two terms, with
  dropout so training draws random numbers), ``list[dict(pred=[2])]`` in eval.
- ``TinyTrainLoader``: an infinite, seeded, rank-sharded loader whose batch ``k`` depends only on
  ``(seed, k)``; it is resumable through ``state_dict()``/``load_state_dict()``.
- ``TinyTestLoader`` / ``TinyEvaluator``: a finite loader sharded over ranks and an evaluator
  that gathers squared errors to rank 0 (mean squared error and sample count).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from detrex_ext.evaluation import DatasetEvaluator
from detrex_ext.utils import comm

IN_DIM, OUT_DIM = 4, 2


def make_samples(num: int, seed: int) -> list[dict]:
    """Samples ``y = A x + noise`` with a fixed ``A`` (the same for every seed)."""
    weight = torch.arange(IN_DIM * OUT_DIM, dtype=torch.float32).reshape(OUT_DIM, IN_DIM) / 8 - 0.4
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn(num, IN_DIM, generator=gen)
    ys = xs @ weight.T + 0.05 * torch.randn(num, OUT_DIM, generator=gen)
    return [{"x": x, "y": y, "index": i} for i, (x, y) in enumerate(zip(xs, ys))]


class TinyRegressor(nn.Module):
    """Two linear layers with a LayerNorm and dropout.

    Args:
        hidden: hidden width.
        dropout: dropout probability in training.
        step_sleep: seconds to sleep per training forward (lets tests kill a run mid-way).
        nan_term_at_iter: from this forward call on, ``loss_l1`` becomes NaN (None: never).
    """

    def __init__(
        self,
        hidden: int = 16,
        dropout: float = 0.1,
        step_sleep: float = 0.0,
        nan_term_at_iter: int | None = None,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(IN_DIM, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, OUT_DIM)
        self.step_sleep = step_sleep
        self.nan_term_at_iter = nan_term_at_iter
        self.forward_calls = 0
        self.last_hidden_dtype: torch.dtype | None = None

    @property
    def device(self) -> torch.device:
        return self.fc1.weight.device

    def forward(self, batched_inputs: list[dict]):
        x = torch.stack([d["x"] for d in batched_inputs]).to(self.device)
        hidden = self.fc1(x)
        self.last_hidden_dtype = hidden.dtype
        out = self.fc2(self.dropout(torch.relu(self.norm(hidden))))
        if not self.training:
            return [{"pred": o} for o in out]
        if self.step_sleep:
            time.sleep(self.step_sleep)
        y = torch.stack([d["y"] for d in batched_inputs]).to(self.device)
        loss_l1 = 0.1 * (out.float() - y).abs().mean()
        if self.nan_term_at_iter is not None and self.forward_calls >= self.nan_term_at_iter:
            loss_l1 = loss_l1 * float("nan")
        self.forward_calls += 1
        return {"loss_mse": ((out.float() - y) ** 2).mean(), "loss_l1": loss_l1}


class TinyTrainLoader:
    """Infinite batches of ``batch_size`` samples per rank.

    Batch ``k`` of rank ``r`` takes positions ``k * B * world + r * B ...`` of an epoch-wise
    permutation seeded by ``(seed, epoch)``, and adds jitter from a generator seeded by
    ``(seed, k, r)``, so it depends only on ``(seed, k)`` and the loader can resume at any ``k``.
    """

    def __init__(self, num_samples: int = 64, batch_size: int = 4, seed: int = 0) -> None:
        self.samples = make_samples(num_samples, seed=1234)
        self.batch_size = batch_size
        self.seed = seed
        self.batches_yielded = 0

    def _batch(self, k: int) -> list[dict]:
        world, rank, size = comm.get_world_size(), comm.get_rank(), self.batch_size
        n = len(self.samples)
        out = []
        for j in range(size):
            position = (k * world + rank) * size + j
            epoch, offset = divmod(position, n)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch))
            sample = self.samples[int(order[offset])]
            gen = torch.Generator().manual_seed(self.seed * 7919 + position)
            jitter = 0.01 * torch.randn(IN_DIM, generator=gen)
            out.append({**sample, "x": sample["x"] + jitter})
        return out

    def __iter__(self):
        while True:
            batch = self._batch(self.batches_yielded)
            self.batches_yielded += 1
            yield batch

    def state_dict(self) -> dict:
        return {"batches_yielded": self.batches_yielded}

    def load_state_dict(self, state: dict) -> None:
        self.batches_yielded = int(state["batches_yielded"])


class TinyTestLoader:
    """``num_samples`` fixed samples in batches of ``batch_size``, split contiguously by rank."""

    def __init__(self, num_samples: int = 10, batch_size: int = 2) -> None:
        samples = make_samples(num_samples, seed=99)
        world, rank = comm.get_world_size(), comm.get_rank()
        per_rank = -(-num_samples // world)
        mine = samples[rank * per_rank : (rank + 1) * per_rank]
        self.batches = [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class TinyEvaluator(DatasetEvaluator):
    """Mean squared error of ``pred`` against ``y`` over all ranks (on rank 0)."""

    def reset(self) -> None:
        self._errors: list[tuple[int, float]] = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            error = ((out["pred"].float().cpu() - inp["y"]) ** 2).mean().item()
            self._errors.append((inp["index"], error))

    def evaluate(self) -> dict:
        gathered = comm.gather(self._errors)
        if not comm.is_main_process():
            return {}
        errors = [e for part in gathered for e in part]
        indices = sorted(i for i, _ in errors)
        return {
            "tiny": {
                "mse": sum(e for _, e in errors) / len(errors),
                "count": len(errors),
                "distinct": len(set(indices)),
            }
        }
