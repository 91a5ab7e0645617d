"""detectron2's sampler and batching names: RepeatFactorTrainingSampler (and its category-frequency
factors), GroupedBatchSampler, ToIterableDataset, build_batch_data_loader, and MapDataset over
iterable datasets and with lambda mappers in spawned workers."""

from __future__ import annotations

import math
import pickle
from collections import Counter

import pytest
import torch
from torch.utils import data as torchdata

from detrex_ext.data import (
    DatasetFromList,
    MapDataset,
    ToIterableDataset,
    build_batch_data_loader,
)
from detrex_ext.data.samplers import (
    GroupedBatchSampler,
    RepeatFactorTrainingSampler,
    TrainingSampler,
)


def _records(*category_sets):
    return [{"annotations": [{"category_id": c} for c in cats]} for cats in category_sets]


def test_repeat_factors_from_category_frequency_by_hand():
    # f(1) = 3/4, f(2) = 1/4; threshold 0.5: r(1) = max(1, sqrt(2/3)) = 1, r(2) = sqrt(2)
    records = _records([1], [1, 2], [1, 1], [])
    factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(records, 0.5)
    assert factors.dtype == torch.float32
    assert factors.tolist() == pytest.approx([1.0, math.sqrt(2), 1.0, 1.0])
    no_sqrt = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
        records, 0.5, sqrt=False
    )
    assert no_sqrt.tolist() == pytest.approx([1.0, 2.0, 1.0, 1.0])


def test_repeat_factor_sampler_repeats_in_expectation():
    sampler = RepeatFactorTrainingSampler(torch.tensor([0.0, 1.0, 2.5]), seed=3)
    stream = iter(sampler)
    counts = Counter(next(stream) for _ in range(35000))  # about 10000 epochs of 3.5 items
    assert counts[0] == 0
    # index 1 appears exactly once per epoch, index 2 two or three times (2.5 on average)
    assert counts[2] / counts[1] == pytest.approx(2.5, abs=0.03)
    # same seed: same stream; start_index skips this rank's first items
    first = [i for _, i in zip(range(40), RepeatFactorTrainingSampler([1.0, 2.5, 0.5], seed=1))]
    again = RepeatFactorTrainingSampler([1.0, 2.5, 0.5], seed=1, start_index=15)
    assert [i for _, i in zip(range(25), again)] == first[15:]
    # all ones is a plain TrainingSampler over the same number of items, epoch by epoch
    ones = RepeatFactorTrainingSampler(torch.ones(5), seed=0)
    epochs = [i for _, i in zip(range(15), ones)]
    assert [sorted(epochs[k : k + 5]) for k in (0, 5, 10)] == [list(range(5))] * 3
    with pytest.raises(ValueError, match=">= 0"):
        RepeatFactorTrainingSampler([1.0, -1.0], seed=0)


def test_grouped_batch_sampler_keeps_order_within_groups():
    sampler = torchdata.SequentialSampler(range(7))
    batches = list(iter(GroupedBatchSampler(sampler, [0, 1, 0, 0, 1, 1, 0], batch_size=2)))
    assert batches == [[0, 2], [1, 4], [3, 6]]  # index 5 waits for a second group-1 index
    with pytest.raises(NotImplementedError):
        len(GroupedBatchSampler(sampler, [0] * 7, 2))
    with pytest.raises(ValueError, match="Sampler"):
        GroupedBatchSampler(range(7), [0] * 7, 2)


def test_to_iterable_dataset_follows_the_sampler_across_workers():
    dataset = DatasetFromList(list(range(100, 112)))
    sampler = torchdata.SequentialSampler(range(12))
    assert list(ToIterableDataset(dataset, sampler)) == list(range(100, 112))
    # two workers take turns by chunks of the batch size: batches come out in sampler order
    loader = torchdata.DataLoader(
        ToIterableDataset(dataset, sampler, shard_chunk_size=3), batch_size=3, num_workers=2
    )
    assert [b.tolist() for b in loader] == [[100, 101, 102], [103, 104, 105], [106, 107, 108],
                                             [109, 110, 111]]  # fmt: skip
    with pytest.raises(TypeError, match="map-style"):
        ToIterableDataset(ToIterableDataset(dataset, sampler), sampler)


def test_build_batch_data_loader_batches_lists_and_groups_aspect_ratios():
    items = [{"i": i, "width": 4 if i % 2 else 2, "height": 3} for i in range(8)]
    dataset = DatasetFromList(items)
    loader = build_batch_data_loader(dataset, torchdata.SequentialSampler(range(7)), 2)
    assert [[x["i"] for x in batch] for batch in loader] == [[0, 1], [2, 3], [4, 5]]
    grouped = build_batch_data_loader(
        dataset, TrainingSampler(8, shuffle=False, seed=0), 2, aspect_ratio_grouping=True
    )
    batches = [batch for _, batch in zip(range(4), grouped)]
    # landscape (odd i: width 4 > height 3) and portrait images are never mixed
    assert [[x["i"] for x in b] for b in batches] == [[0, 2], [1, 3], [4, 6], [5, 7]]
    collated = build_batch_data_loader(
        dataset,
        TrainingSampler(8, shuffle=False, seed=0),
        None,
        single_gpu_batch_size=3,
        collate_fn=lambda batch: [x["i"] for x in batch],
    )
    assert next(iter(collated)) == [0, 1, 2]
    with pytest.raises(ValueError, match="needs a sampler"):
        build_batch_data_loader(dataset, None, 2)
    with pytest.raises(ValueError, match="no sampler"):
        build_batch_data_loader(ToIterableDataset(dataset, torchdata.SequentialSampler(items)),
                                torchdata.SequentialSampler(items), 2)  # fmt: skip
    with pytest.raises(ValueError, match="not both"):
        build_batch_data_loader(dataset, None, 2, single_gpu_batch_size=1)


def test_map_dataset_over_an_iterable_dataset_skips_none():
    stream = ToIterableDataset(
        DatasetFromList(list(range(6))), torchdata.SequentialSampler(range(6))
    )
    mapped = MapDataset(stream, lambda x: None if x % 3 == 0 else 10 * x)
    assert isinstance(mapped, torchdata.IterableDataset)
    assert list(mapped) == [10, 20, 40, 50]
    assert list(pickle.loads(pickle.dumps(mapped))) == [10, 20, 40, 50]


def test_map_dataset_with_a_lambda_mapper_in_spawned_workers():
    offset = 7
    mapped = MapDataset(DatasetFromList([1, 2, 3]), lambda x: x + offset)  # a closure
    assert isinstance(mapped, MapDataset) and pickle.loads(pickle.dumps(mapped))[2] == 10
    loader = torchdata.DataLoader(
        mapped, batch_size=None, num_workers=1, multiprocessing_context="spawn"
    )
    assert list(loader) == [8, 9, 10]
