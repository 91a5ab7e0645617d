"""Dataset dict assembly and the train / test data loaders (detectron2 names and arguments)."""

from __future__ import annotations

import itertools
import logging
import random
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tabulate import tabulate
from torch.utils import data as torchdata

from detrex_ext.utils import comm
from detrex_ext.utils.env import derive_seed

from .catalog import DatasetCatalog, MetadataCatalog
from .common import (
    AspectRatioGroupedDataset,
    DatasetFromList,
    MapDataset,
    SampledMapDataset,
    ToIterableDataset,
)
from .samplers import InferenceSampler, TrainingSampler

logger = logging.getLogger(__name__)

__all__ = [
    "build_batch_data_loader",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "get_detection_dataset_dicts",
    "trivial_batch_collator",
    "worker_init_reset_seed",
]


def _per_process_batch_size(total_batch_size: int) -> int:
    """This process's share of ``total_batch_size`` (a positive multiple of the process count)."""
    world_size = comm.get_world_size()
    if total_batch_size <= 0 or total_batch_size % world_size != 0:
        raise ValueError(
            f"total_batch_size ({total_batch_size}) must be a positive multiple of the number of "
            f"processes ({world_size})"
        )
    return total_batch_size // world_size


def get_detection_dataset_dicts(
    names: str | Sequence[str],
    filter_empty: bool = True,
    min_keypoints: int = 0,
    proposal_files: Any = None,
    check_consistency: bool = True,
) -> list[dict]:
    """Load and concatenate the dataset dicts of one or more registered datasets.

    Args:
        names: dataset name(s) registered in ``DatasetCatalog`` (or built-in).
        filter_empty: drop images whose annotations are all crowd (or absent), for datasets
            with instance annotations.
        min_keypoints: drop images with fewer visible keypoints (keypoint datasets only).
        proposal_files: not supported (Mask DINO does not use precomputed proposals).
        check_consistency: require all datasets to have the same ``thing_classes``.
    """
    if proposal_files:
        raise NotImplementedError("precomputed proposal files are not supported")
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError("get_detection_dataset_dicts needs at least one dataset name")
    per_dataset = [DatasetCatalog.get(name) for name in names]
    for name, dicts in zip(names, per_dataset):
        if len(dicts) == 0:
            raise ValueError(f"Dataset {name!r} is empty: check its files and registration")
    dataset_dicts = list(itertools.chain.from_iterable(per_dataset))
    has_instances = "annotations" in dataset_dicts[0]
    if filter_empty and has_instances:
        before = len(dataset_dicts)
        dataset_dicts = [d for d in dataset_dicts if _has_non_crowd(d.get("annotations", []))]
        logger.info(
            "Removed %d images with no usable annotations; %d left",
            before - len(dataset_dicts),
            len(dataset_dicts),
        )
    if min_keypoints > 0 and has_instances:
        dataset_dicts = [d for d in dataset_dicts if _num_keypoints(d) >= min_keypoints]
    if has_instances:
        _check_and_log_classes(names, dataset_dicts, check_consistency)
    if not dataset_dicts:
        raise ValueError(f"No images left in {', '.join(names)} after filtering")
    return dataset_dicts


def _has_non_crowd(annotations: list[dict]) -> bool:
    return any(a.get("iscrowd", 0) == 0 for a in annotations)


def _num_keypoints(record: dict) -> int:
    return sum(
        int((np.asarray(a["keypoints"])[2::3] > 0).sum())
        for a in record.get("annotations", [])
        if "keypoints" in a
    )


def _check_and_log_classes(names: list[str], dataset_dicts: list[dict], check: bool) -> None:
    class_lists = [MetadataCatalog.get(n).get("thing_classes") for n in names]
    if check and len(names) > 1:
        for name, classes in zip(names[1:], class_lists[1:]):
            if classes != class_lists[0]:
                raise ValueError(
                    f"Datasets {names[0]!r} and {name!r} have different thing_classes; they "
                    "cannot be trained together (set check_consistency=False to override)"
                )
    classes = class_lists[0]
    if not classes:
        return
    counts = Counter(
        a["category_id"]
        for d in dataset_dicts
        for a in d.get("annotations", [])
        if not a.get("iscrowd", 0)
    )
    for category_id in counts:
        if not 0 <= category_id < len(classes):
            raise ValueError(
                f"An annotation of {names} has class {category_id}, but the dataset has "
                f"{len(classes)} thing_classes; category ids must be contiguous (0..K-1)"
            )
    rows = [(name, counts.get(i, 0)) for i, name in enumerate(classes)]
    table = tabulate(rows + [("total", sum(counts.values()))], headers=["category", "#instances"])
    logger.info("Distribution of instances among %d categories:\n%s", len(classes), table)


def trivial_batch_collator(batch: list) -> list:
    """Batches stay lists of dicts (the model input format)."""
    return batch


def worker_init_reset_seed(worker_id: int) -> None:
    """Give each data-loader worker its own numpy / random / torch seeds."""
    seed = torch.initial_seed() % 2**31
    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)


def _as_dataset(dataset: Any) -> Any:
    if isinstance(dataset, str) or (
        isinstance(dataset, (list, tuple)) and dataset and isinstance(dataset[0], str)
    ):
        dataset = get_detection_dataset_dicts(dataset)
    if isinstance(dataset, (list, tuple)):
        dataset = DatasetFromList(list(dataset), copy=False)
    return dataset


def build_detection_train_loader(
    dataset: Any,
    mapper: Callable[[dict], Any] | None = None,
    total_batch_size: int = 16,
    num_workers: int = 0,
    aspect_ratio_grouping: bool = True,
    sampler: torchdata.Sampler | None = None,
    seed: int | None = None,
    collate_fn: Callable[[list], Any] | None = None,
    start_iter: int = 0,
    skip_unreadable_images: bool = False,
) -> Any:
    """An infinite training loader yielding ``list[dict]`` batches of ``total_batch_size /
    world_size`` mapped dicts per process.

    Args:
        dataset: dataset dicts (list), dataset name(s), or a map-style torch Dataset.
        mapper: dataset dict -> model input dict (None keeps the dicts as they are).
        total_batch_size: images per iteration over all processes.
        num_workers: data-loader worker processes per process (0 = load in the main process).
        aspect_ratio_grouping: batch landscape and portrait images separately.
        sampler: defaults to ``TrainingSampler(len(dataset), seed=seed)``.
        seed: seed of the default sampler, of the per-item augmentation seeds and of the
            loader's own generator (None = a random seed shared by all processes). The loader
            never draws from the global random generators, which belong to the model.
        collate_fn: turns a list of items into a batch (default: keep the list).
        start_iter: resume point; the default sampler skips ``start_iter`` batches of this
            process, so the data order (and, without aspect-ratio grouping, every batch and
            augmentation) continues exactly as in an uninterrupted run.
        skip_unreadable_images: skip images that cannot be read (missing, empty, truncated,
            not an image) with a counted warning, instead of stopping with an error naming the
            file.
    """
    batch_size = _per_process_batch_size(total_batch_size)
    dataset = _as_dataset(dataset)
    if seed is None:
        seed = comm.shared_random_seed()
    # the DataLoader draws its workers' base seed when iteration starts; from its own generator,
    # not the global one, which the trainer seeds per iteration for the model's random numbers
    generator = torch.Generator().manual_seed(derive_seed(seed, comm.get_rank()))
    if isinstance(dataset, torchdata.IterableDataset):
        if sampler is not None:
            raise ValueError("a sampler cannot be used with an IterableDataset")
        stream = dataset if mapper is None else _MapIterable(dataset, mapper)
    else:
        if sampler is None:
            sampler = TrainingSampler(len(dataset), seed=seed, start_index=start_iter * batch_size)
        elif start_iter:
            logger.warning("start_iter=%d is ignored with a custom sampler", start_iter)
        # with grouping, single items round-robin over workers keep the sampler's order exactly
        chunk_size = 1 if aspect_ratio_grouping else batch_size
        stream = SampledMapDataset(
            dataset,
            mapper or _identity,
            sampler,
            chunk_size,
            seed=seed,
            skip_unreadable=skip_unreadable_images,
        )
    if aspect_ratio_grouping:
        loader = torchdata.DataLoader(
            stream,
            batch_size=None,
            num_workers=num_workers,
            collate_fn=_identity,
            worker_init_fn=worker_init_reset_seed,
            persistent_workers=num_workers > 0,
            generator=generator,
        )
        grouped = AspectRatioGroupedDataset(loader, batch_size)
        return grouped if collate_fn is None else _MapIterable(grouped, collate_fn)
    return torchdata.DataLoader(
        stream,
        batch_size=batch_size,
        drop_last=True,
        num_workers=num_workers,
        collate_fn=trivial_batch_collator if collate_fn is None else collate_fn,
        worker_init_fn=worker_init_reset_seed,
        persistent_workers=num_workers > 0,
        generator=generator,
    )


def build_detection_test_loader(
    dataset: Any,
    mapper: Callable[[dict], Any] | None = None,
    batch_size: int = 1,
    num_workers: int = 0,
    sampler: torchdata.Sampler | None = None,
    collate_fn: Callable[[list], Any] | None = None,
) -> torchdata.DataLoader:
    """A finite loader over this process's contiguous shard of the dataset (no duplicates)."""
    dataset = _as_dataset(dataset)
    if mapper is not None:
        dataset = MapDataset(dataset, mapper)
    if sampler is None:
        sampler = InferenceSampler(len(dataset))
    return torchdata.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=False,
        num_workers=num_workers,
        collate_fn=trivial_batch_collator if collate_fn is None else collate_fn,
    )


def build_batch_data_loader(
    dataset: Any,
    sampler: torchdata.Sampler | None,
    total_batch_size: int,
    *,
    aspect_ratio_grouping: bool = False,
    num_workers: int = 0,
    collate_fn: Callable[[list], Any] | None = None,
    drop_last: bool = True,
    single_gpu_batch_size: int | None = None,
    prefetch_factor: int = 2,
    persistent_workers: bool = False,
    pin_memory: bool = False,
    seed: int | None = None,
    **kwargs: Any,
) -> Any:
    """detectron2's batched loader: ``list`` batches (no collation) of a mapped dataset.

    Args:
        dataset: map-style (then ``sampler`` gives the indices) or iterable (``sampler`` None).
        sampler: the index stream of a map-style dataset, sharded over workers in chunks of the
            per-process batch size.
        total_batch_size: images per iteration over all processes (or give
            ``single_gpu_batch_size``, the per-process count, instead).
        aspect_ratio_grouping: batch landscape and portrait images separately (needs
            ``drop_last``).
        num_workers, prefetch_factor, persistent_workers, pin_memory, kwargs: ``DataLoader``'s.
        collate_fn: turns a list of items into a batch (default: keep the list).
        drop_last: drop an incomplete last batch.
        seed: seed of the ``DataLoader``'s generator (worker base seeds).
    """
    if single_gpu_batch_size:
        if total_batch_size:
            raise ValueError("give total_batch_size or single_gpu_batch_size, not both")
        batch_size = single_gpu_batch_size
    else:
        batch_size = _per_process_batch_size(total_batch_size)
    if isinstance(dataset, torchdata.IterableDataset):
        if sampler is not None:
            raise ValueError("an IterableDataset takes no sampler (pass sampler=None)")
    else:
        if sampler is None:
            raise ValueError("a map-style dataset needs a sampler")
        dataset = ToIterableDataset(dataset, sampler, shard_chunk_size=batch_size)
    generator = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(seed)
    loader_kwargs = dict(
        num_workers=num_workers,
        worker_init_fn=worker_init_reset_seed,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        persistent_workers=persistent_workers,
        pin_memory=pin_memory,
        generator=generator,
        **kwargs,
    )
    if aspect_ratio_grouping:
        if not drop_last:
            raise ValueError("aspect ratio grouping drops incomplete batches: set drop_last=True")
        items = torchdata.DataLoader(dataset, collate_fn=_first, **loader_kwargs)
        grouped = AspectRatioGroupedDataset(items, batch_size)
        return grouped if collate_fn is None else MapDataset(grouped, collate_fn)
    return torchdata.DataLoader(
        dataset,
        batch_size=batch_size,
        drop_last=drop_last,
        collate_fn=trivial_batch_collator if collate_fn is None else collate_fn,
        **loader_kwargs,
    )


def _first(batch: list) -> Any:
    return batch[0]


def _identity(x: Any) -> Any:
    return x


class _MapIterable(torchdata.IterableDataset):
    """Apply ``func`` to each element of an iterable (skipping None results)."""

    def __init__(self, iterable: Any, func: Callable[[Any], Any]):
        self._iterable = iterable
        self._func = func

    def __iter__(self):
        for item in self._iterable:
            out = self._func(item)
            if out is not None:
                yield out
