"""Dataset wrappers: list storage, mapping, sampled streams and aspect-ratio grouping."""

from __future__ import annotations

import contextlib
import copy
import logging
import pickle
import random
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch.utils import data as torchdata

from detrex_ext.utils.image_io import UnreadableImageError
from detrex_ext.utils.serialize import PicklableWrapper

logger = logging.getLogger(__name__)

__all__ = [
    "AspectRatioGroupedDataset",
    "DatasetFromList",
    "MapDataset",
    "SampledMapDataset",
    "ToIterableDataset",
    "seeded_random_state",
]


class DatasetFromList(torchdata.Dataset):
    """A map-style dataset over a list of dataset dicts.

    With ``serialize=True`` the items are pickled into one numpy buffer, so forked worker
    processes share it without copy-on-access memory growth; every access returns a fresh copy,
    so mappers may modify what they get.
    """

    def __init__(self, items: list, copy: bool = True, serialize: bool = True):
        self._copy = copy
        self._serialize = serialize
        if serialize:
            blobs = [np.frombuffer(pickle.dumps(x, protocol=-1), dtype=np.uint8) for x in items]
            self._addresses = np.cumsum(np.asarray([len(b) for b in blobs], dtype=np.int64))
            self._buffer = np.concatenate(blobs) if blobs else np.zeros(0, dtype=np.uint8)
            self._length = len(blobs)
            logger.debug(
                "Serialized %d items into %.2f MiB", len(blobs), self._buffer.nbytes / 2**20
            )
        else:
            self._items = items
            self._length = len(items)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, idx: int) -> Any:
        if self._serialize:
            start = 0 if idx == 0 else int(self._addresses[idx - 1])
            end = int(self._addresses[idx])
            return pickle.loads(memoryview(self._buffer[start:end]))
        item = self._items[idx]
        return copy.deepcopy(item) if self._copy else item


class MapDataset(torchdata.Dataset):
    """``map_func`` over the items of ``dataset`` (detectron2's ``MapDataset``).

    A map-style ``dataset`` gives a map-style dataset: when ``map_func`` returns None (e.g.
    nothing left after a crop) another random item is tried instead, with a warning after 3
    failures in a row. An ``IterableDataset`` gives an iterable one whose None results are
    skipped. ``map_func`` may be a lambda or a closure: it is pickled with cloudpickle, so the
    dataset also works in data-loader workers started with ``spawn``.
    """

    def __new__(cls, dataset: Any, map_func: Callable[[Any], Any]) -> Any:
        if isinstance(dataset, torchdata.IterableDataset):
            return _MapIterableDataset(dataset, map_func)
        return super().__new__(cls)

    def __init__(self, dataset: torchdata.Dataset, map_func: Callable[[Any], Any]):
        self._dataset = dataset
        self._map_func = PicklableWrapper(map_func)
        self._rng = random.Random(42)
        self._fallback_candidates = set(range(len(dataset)))

    def __getnewargs__(self) -> tuple:
        # pickle calls __new__ with these: it must see the dataset to pick the class
        return self._dataset, self._map_func

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, idx: int) -> Any:
        retries = 0
        cur_idx = int(idx)
        while True:
            data = self._map_func(self._dataset[cur_idx])
            if data is not None:
                self._fallback_candidates.add(cur_idx)
                return data
            retries += 1
            self._fallback_candidates.discard(cur_idx)
            if not self._fallback_candidates:
                raise RuntimeError("the mapper returned None for every item of the dataset")
            cur_idx = self._rng.choice(sorted(self._fallback_candidates))
            if retries >= 3:
                logger.warning(
                    "Failed to apply the mapper to item %d after %d retries", idx, retries
                )


class _MapIterableDataset(torchdata.IterableDataset):
    """``map_func`` over an iterable dataset; items mapped to None are skipped."""

    def __init__(self, dataset: torchdata.IterableDataset, map_func: Callable[[Any], Any]):
        self._dataset = dataset
        self._map_func = PicklableWrapper(map_func)

    def __len__(self) -> int:
        return len(self._dataset)

    def __iter__(self) -> Iterator[Any]:
        for item in self._dataset:
            mapped = self._map_func(item)
            if mapped is not None:
                yield mapped


def _shard_for_worker(iterable: Iterable, chunk_size: int) -> Iterator:
    """Inside data-loader worker w of n: chunks ``w, w + n, w + 2n, ...`` of ``chunk_size``
    consecutive items (everything outside workers)."""
    info = torchdata.get_worker_info()
    if info is None or info.num_workers == 1:
        yield from iterable
        return
    for k, item in enumerate(iterable):
        if (k // chunk_size) % info.num_workers == info.id:
            yield item


class ToIterableDataset(torchdata.IterableDataset):
    """An iterable dataset of ``dataset[i]`` for the indices ``sampler`` yields.

    Args:
        dataset: a map-style dataset.
        sampler: yields indices (cheap to iterate: every worker runs its own copy).
        shard_sampler: split the indices over data-loader workers (False when the sampler is
            already sharded per worker).
        shard_chunk_size: workers take turns by chunks of this many consecutive indices, so a
            loader with ``batch_size=shard_chunk_size`` returns the sampler's order.
    """

    def __init__(
        self,
        dataset: torchdata.Dataset,
        sampler: torchdata.Sampler,
        shard_sampler: bool = True,
        shard_chunk_size: int = 1,
    ):
        if isinstance(dataset, torchdata.IterableDataset):
            raise TypeError("ToIterableDataset needs a map-style dataset (with __getitem__)")
        if not isinstance(sampler, torchdata.Sampler):
            raise TypeError(f"sampler must be a torch.utils.data.Sampler, got {type(sampler)}")
        self.dataset = dataset
        self.sampler = sampler
        self.shard_sampler = shard_sampler
        self.shard_chunk_size = shard_chunk_size

    def __iter__(self) -> Iterator[Any]:
        indices = self.sampler
        if self.shard_sampler:
            indices = _shard_for_worker(self.sampler, self.shard_chunk_size)
        for index in indices:
            yield self.dataset[index]

    def __len__(self) -> int:
        return len(self.sampler)


@contextlib.contextmanager
def seeded_random_state(seed: int) -> Iterator[None]:
    """Seed ``numpy.random``, ``random`` and torch's CPU generator inside the block, then put
    back the previous states (so the caller's random streams are untouched).

    Only the CPU generator: ``torch.manual_seed`` would also reseed (and not restore) every
    accelerator generator, and before CUDA is initialised it records a stack trace per call.
    """
    np_state, py_state = np.random.get_state(), random.getstate()
    torch_state = torch.default_generator.get_state()
    np.random.seed(seed % 2**32)
    random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
        torch.default_generator.set_state(torch_state)


def _sample_seed(base_seed: int, position: int) -> int:
    return int(np.random.SeedSequence([base_seed % 2**63, position]).generate_state(1)[0])


class SampledMapDataset(torchdata.IterableDataset):
    """Iterate ``sampler`` over ``dataset`` and map each item, inside data-loader workers.

    Each worker takes whole chunks of ``chunk_size`` consecutive sampler items in turn, so with
    ``DataLoader(batch_size=chunk_size)`` batch k is exactly sampler items
    ``[k*chunk_size, (k+1)*chunk_size)`` whatever the number of workers.

    The mapper of the item at global stream position ``p`` runs with its random generators
    seeded from ``(seed, p)``: augmentations do not depend on the number of workers, and a run
    resumed with ``TrainingSampler(start_index=...)`` repeats them exactly. Items the mapper
    turns into None are skipped; so are images that cannot be read (missing, empty, damaged)
    when ``skip_unreadable`` is set, each with a counted warning (otherwise the error names the
    file and this option).
    """

    def __init__(
        self,
        dataset: torchdata.Dataset,
        map_func: Callable[[Any], Any],
        sampler: torchdata.Sampler,
        chunk_size: int = 1,
        seed: int | None = None,
        skip_unreadable: bool = False,
    ):
        self._dataset = dataset
        self._map_func = map_func
        self._sampler = sampler
        self._chunk_size = chunk_size
        self._seed = seed if seed is not None else getattr(sampler, "seed", 0)
        self._skip_unreadable = skip_unreadable
        self.num_skipped = 0

    def _positions(self) -> Iterator[tuple[int, int]]:
        if hasattr(self._sampler, "iter_with_positions"):
            return self._sampler.iter_with_positions()
        return enumerate(iter(self._sampler))

    def __iter__(self) -> Iterator[Any]:
        info = torchdata.get_worker_info()
        worker_id, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for k, (position, index) in enumerate(self._positions()):
            if (k // self._chunk_size) % num_workers != worker_id:
                continue
            try:
                with seeded_random_state(_sample_seed(self._seed, position)):
                    data = self._map_func(self._dataset[index])
            except (UnreadableImageError, FileNotFoundError) as e:
                if not self._skip_unreadable:
                    raise type(e)(
                        f"{e}. To skip unreadable images with a warning instead, set "
                        "dataloader.train.skip_unreadable_images=True"
                    ) from None
                self.num_skipped += 1
                logger.warning(
                    "Skipped dataset item %d: %s (%d unreadable images skipped so far%s)",
                    index,
                    e,
                    self.num_skipped,
                    f" by worker {worker_id}" if num_workers > 1 else "",
                )
                continue
            if data is None:
                logger.warning("Mapper returned None for dataset item %d; skipping it", index)
                continue
            yield data


class AspectRatioGroupedDataset(torchdata.IterableDataset):
    """Batch items from ``dataset`` so that each batch holds only landscape (w > h) or only
    portrait images, which reduces padding. Uses the mapped dicts' ``width``/``height``.
    """

    def __init__(self, dataset: Any, batch_size: int):
        self.dataset = dataset
        self.batch_size = batch_size
        self._buckets: list[list] = [[], []]

    def __iter__(self) -> Iterator[list]:
        for item in self.dataset:
            bucket = self._buckets[0 if item["width"] > item["height"] else 1]
            bucket.append(item)
            if len(bucket) == self.batch_size:
                batch = bucket[:]
                del bucket[:]
                yield batch
