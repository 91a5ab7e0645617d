"""Samplers: the infinite, seeded, rank-sharded training stream and exact inference shards."""

from __future__ import annotations

import itertools
import operator
from typing import Iterator

import torch
from torch.utils.data import Sampler

from detrex_ext.utils import comm

__all__ = ["InferenceSampler", "TrainingSampler"]


class TrainingSampler(Sampler[int]):
    """An infinite stream of dataset indices, sharded over ranks.

    The global stream is the concatenation of epochs, each a permutation (or ``range`` with
    ``shuffle=False``) drawn from a ``torch.Generator`` seeded with ``seed``. Global position
    ``p`` goes to rank ``p % world_size``, so all ranks together see every index once per epoch.

    ``start_index`` skips that many of *this rank's* items, so a resumed run continues the
    stream exactly where it stopped (``start_index = iteration * batch_size_per_rank``).

    Args:
        size: dataset length.
        shuffle: permute each epoch.
        seed: shared by all ranks; None draws one with ``comm.shared_random_seed()``.
        start_index: items of this rank's stream to skip.
    """

    def __init__(
        self, size: int, shuffle: bool = True, seed: int | None = None, start_index: int = 0
    ):
        size = operator.index(size)
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a positive dataset size, got {size!r}")
        if start_index < 0:
            raise ValueError(f"start_index must be >= 0, got {start_index}")
        self._size = size
        self._shuffle = shuffle
        self.seed = int(comm.shared_random_seed() if seed is None else seed)
        self.start_index = start_index
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()

    def __iter__(self) -> Iterator[int]:
        for _, index in self.iter_with_positions():
            yield index

    def iter_with_positions(self) -> Iterator[tuple[int, int]]:
        """Yield ``(global_position, dataset_index)`` pairs of this rank's stream."""
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        epoch, order = -1, None
        start = self._rank + self.start_index * self._world_size
        for position in itertools.count(start, self._world_size):
            position_epoch, offset = divmod(position, self._size)
            while epoch < position_epoch:
                order = self._epoch_order(generator)
                epoch += 1
            yield position, int(order[offset])

    def _epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        if self._shuffle:
            return torch.randperm(self._size, generator=generator)
        return torch.arange(self._size)


class InferenceSampler(Sampler[int]):
    """Each rank gets one contiguous shard of ``range(size)``; shards differ by at most one
    item and nothing is repeated, so distributed evaluation counts every image exactly once.
    """

    def __init__(self, size: int):
        if size < 0:
            raise ValueError(f"InferenceSampler needs a size >= 0, got {size}")
        self._size = size
        rank, world_size = comm.get_rank(), comm.get_world_size()
        self._local_indices = range(*self._get_local_indices(size, world_size, rank))

    @staticmethod
    def _get_local_indices(total_size: int, world_size: int, rank: int) -> tuple[int, int]:
        """``(begin, end)`` of ``rank``'s shard."""
        base, remainder = divmod(total_size, world_size)
        sizes = [base + int(r < remainder) for r in range(world_size)]
        begin = sum(sizes[:rank])
        return begin, begin + sizes[rank]

    def __iter__(self) -> Iterator[int]:
        yield from self._local_indices

    def __len__(self) -> int:
        return len(self._local_indices)
