"""Samplers: the infinite, seeded, rank-sharded training streams (uniform or with per-image repeat
factors), exact inference shards, and batching by group (detectron2's names and arguments)."""

from __future__ import annotations

import itertools
import logging
import math
import operator
from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, Sampler

from detrex_ext.utils import comm

__all__ = [
    "GroupedBatchSampler",
    "InferenceSampler",
    "RepeatFactorTrainingSampler",
    "TrainingSampler",
]

logger = logging.getLogger(__name__)


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


class RepeatFactorTrainingSampler(Sampler[int]):
    """Like ``TrainingSampler``, but image i appears about ``repeat_factors[i]`` times per epoch
    (LVIS-style rebalancing of rare classes).

    Each epoch rounds every factor stochastically (``floor(r) + (u < frac(r))``, u uniform from
    the seeded generator), repeats the indices that often and shuffles them; so the epoch
    length varies a little and the factor holds in expectation. Positions are sharded over ranks
    as in ``TrainingSampler``.

    Args:
        repeat_factors: float ``[N]``; all ones is a plain ``TrainingSampler(N)``.
        shuffle: shuffle each epoch.
        seed: shared by all ranks; None draws one with ``comm.shared_random_seed()``.
        start_index: items of this rank's stream to skip (resume).
    """

    def __init__(
        self,
        repeat_factors: torch.Tensor | Sequence[float],
        *,
        shuffle: bool = True,
        seed: int | None = None,
        start_index: int = 0,
    ):
        repeat_factors = torch.as_tensor(repeat_factors, dtype=torch.float32)
        if repeat_factors.ndim != 1 or len(repeat_factors) == 0:
            raise ValueError("repeat_factors must be a non-empty 1-d sequence of floats")
        if (repeat_factors < 0).any():
            raise ValueError("repeat factors must be >= 0")
        self._int_part = torch.trunc(repeat_factors)
        self._frac_part = repeat_factors - self._int_part
        self._shuffle = shuffle
        self.seed = int(comm.shared_random_seed() if seed is None else seed)
        self.start_index = start_index
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()

    @staticmethod
    def repeat_factors_from_category_frequency(
        dataset_dicts: Sequence[dict], repeat_thresh: float, sqrt: bool = True
    ) -> torch.Tensor:
        """Per-image repeat factors from the frequency of the rarest category in each image.

        With f(c) the fraction of images that contain category c, a category repeats
        ``r(c) = max(1, sqrt(repeat_thresh / f(c)))`` times (without the square root when
        ``sqrt=False``) and an image ``max(r(c) for c in it)`` times (1 without annotations).

        Returns:
            float32 ``[len(dataset_dicts)]``.
        """
        images_with = defaultdict(int)
        for record in dataset_dicts:
            for category in {a["category_id"] for a in record.get("annotations", [])}:
                images_with[category] += 1
        category_repeat = {}
        for category, count in images_with.items():
            ratio = repeat_thresh / (count / len(dataset_dicts))
            category_repeat[category] = max(1.0, math.sqrt(ratio) if sqrt else ratio)
            logger.debug("category %s: repeat factor %.2f", category, category_repeat[category])
        factors = [
            max((category_repeat[a["category_id"]] for a in r.get("annotations", [])), default=1.0)
            for r in dataset_dicts
        ]
        return torch.tensor(factors, dtype=torch.float32)

    def _epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        draws = torch.rand(len(self._frac_part), generator=generator)
        counts = (self._int_part + (draws < self._frac_part).float()).long()
        indices = torch.repeat_interleave(torch.arange(len(counts)), counts)
        if self._shuffle:
            indices = indices[torch.randperm(len(indices), generator=generator)]
        return indices

    def _infinite_indices(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        while True:
            yield from self._epoch_indices(generator).tolist()

    def iter_with_positions(self) -> Iterator[tuple[int, int]]:
        """Yield ``(global_position, dataset_index)`` pairs of this rank's stream."""
        start = self._rank + self.start_index * self._world_size
        positions = itertools.count(start, self._world_size)
        indices = itertools.islice(self._infinite_indices(), start, None, self._world_size)
        yield from zip(positions, indices)

    def __iter__(self) -> Iterator[int]:
        for _, index in self.iter_with_positions():
            yield index


class GroupedBatchSampler(BatchSampler):
    """Batches of ``batch_size`` indices from ``sampler`` whose ``group_ids`` agree.

    Indices wait in a buffer per group until it is full, so batches follow the sampler's
    order as closely as grouping allows; incomplete batches are never yielded.

    Args:
        sampler: yields indices in ``[0, N)``.
        group_ids: ``N`` ints, the group of every index.
        batch_size: indices per batch.
    """

    def __init__(self, sampler: Sampler, group_ids: Sequence[int], batch_size: int):
        if not isinstance(sampler, Sampler):
            raise ValueError(f"sampler must be a torch.utils.data.Sampler, got {sampler!r}")
        self.sampler = sampler
        self.group_ids = np.asarray(group_ids)
        if self.group_ids.ndim != 1:
            raise ValueError("group_ids must be a 1-d sequence of ints")
        self.batch_size = batch_size
        self.buffer_per_group: dict[int, list[int]] = {
            int(k): [] for k in np.unique(self.group_ids)
        }

    def __iter__(self) -> Iterator[list[int]]:
        for index in self.sampler:
            buffer = self.buffer_per_group[int(self.group_ids[index])]
            buffer.append(index)
            if len(buffer) == self.batch_size:
                yield buffer[:]
                del buffer[:]

    def __len__(self) -> int:
        raise NotImplementedError("len() of GroupedBatchSampler is not well-defined")
