"""Samplers and loaders: sharding, determinism, resume, workers, grouping, collation."""

from __future__ import annotations

import itertools

import pytest
import torch

from detrex_ext.data import (
    COCOInstanceLSJDatasetMapper,
    DatasetCatalog,
    InferenceSampler,
    TrainingSampler,
    build_detection_test_loader,
    build_detection_train_loader,
    register_synthetic_shapes,
)
from detrex_ext.data.common import AspectRatioGroupedDataset, DatasetFromList, MapDataset
from detrex_ext.utils import comm


def _as_rank(monkeypatch, rank: int, world_size: int) -> None:
    monkeypatch.setattr(comm, "get_rank", lambda: rank)
    monkeypatch.setattr(comm, "get_world_size", lambda: world_size)


def test_training_sampler_epochs_shards_and_resume(monkeypatch):
    stream = list(itertools.islice(TrainingSampler(7, seed=11), 21))
    for epoch in range(3):
        assert sorted(stream[7 * epoch : 7 * (epoch + 1)]) == list(range(7))
    assert stream != sorted(stream)
    assert list(itertools.islice(TrainingSampler(7, seed=11), 21)) == stream  # seeded
    assert list(itertools.islice(TrainingSampler(7, shuffle=False, seed=1), 9)) == [
        0,
        1,
        2,
        3,
        4,
        5,
        6,
        0,
        1,
    ]

    shards = []
    for rank in range(3):
        _as_rank(monkeypatch, rank, 3)
        shards.append(list(itertools.islice(TrainingSampler(7, seed=11), 7)))
    interleaved = [shards[p % 3][p // 3] for p in range(21)]
    assert interleaved == stream  # ranks take every 3rd item of the same global stream

    _as_rank(monkeypatch, 1, 3)
    resumed = list(itertools.islice(TrainingSampler(7, seed=11, start_index=4), 3))
    assert resumed == shards[1][4:7]
    positions = list(
        itertools.islice(TrainingSampler(7, seed=11, start_index=4).iter_with_positions(), 2)
    )
    assert [p for p, _ in positions] == [13, 16]


@pytest.mark.parametrize("size", [0, 1, 5, 10, 11])
@pytest.mark.parametrize("world_size", [1, 3, 4])
def test_inference_sampler_gives_exact_contiguous_shards(monkeypatch, size, world_size):
    shards = []
    for rank in range(world_size):
        _as_rank(monkeypatch, rank, world_size)
        shard = list(InferenceSampler(size))
        assert shard == list(range(shard[0], shard[0] + len(shard))) if shard else True
        shards.append(shard)
    assert list(itertools.chain(*shards)) == list(range(size))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_dataset_from_list_returns_fresh_copies_and_map_dataset_retries():
    data = DatasetFromList([{"a": [1]}, {"a": [2]}, {"a": [3]}])
    item = data[1]
    item["a"].append(9)
    assert data[1] == {"a": [2]} and len(data) == 3
    mapped = MapDataset(data, lambda d: None if d["a"][0] == 2 else d["a"][0] * 10)
    assert mapped[0] == 10 and mapped[1] in (10, 30)


def test_aspect_ratio_grouping_batches_by_orientation():
    items = [
        {"width": w, "height": h, "i": i}
        for i, (w, h) in enumerate([(4, 2), (2, 4), (3, 1), (1, 3), (5, 4)])
    ]
    batches = list(AspectRatioGroupedDataset(items, batch_size=2))
    assert [[x["i"] for x in b] for b in batches] == [[0, 2], [1, 3]]


@pytest.fixture
def synthetic_train():
    register_synthetic_shapes("loader_syn", num_images=10, image_size=64, max_objects=3, seed=2)
    return DatasetCatalog.get("loader_syn")


def _take(loader, n):
    batches = list(itertools.islice(iter(loader), n))
    return [
        [
            (d["image_id"], d["image"].float().sum().item(), d["instances"].gt_masks.sum().item())
            for d in b
        ]
        for b in batches
    ]


def test_train_loader_is_deterministic_resumable_and_worker_independent(synthetic_train):
    mapper = COCOInstanceLSJDatasetMapper(image_size=64, min_scale=0.5, max_scale=1.5)

    def loader(**kwargs):
        args = dict(mapper=mapper, total_batch_size=2, seed=5, aspect_ratio_grouping=False)
        return build_detection_train_loader(synthetic_train, **{**args, **kwargs})

    reference = _take(loader(), 6)
    assert len(reference) == 6 and all(len(b) == 2 for b in reference)
    assert sorted(i for b in reference[:5] for i, _, _ in b) == list(range(10))  # one epoch
    assert _take(loader(), 6) == reference  # same seed, same images and augmentations
    assert _take(loader(start_iter=4), 2) == reference[4:6]  # resume continues exactly
    assert _take(loader(num_workers=2), 6) == reference  # workers change nothing
    assert _take(loader(seed=6), 6) != reference

    grouped = build_detection_train_loader(
        synthetic_train, mapper=mapper, total_batch_size=3, seed=5
    )
    with_workers = build_detection_train_loader(
        synthetic_train, mapper=mapper, total_batch_size=3, seed=5, num_workers=2
    )
    assert _take(with_workers, 4) == _take(grouped, 4)  # grouping keeps the sampler's order
    batch = next(iter(grouped))
    assert isinstance(batch, list) and len(batch) == 3
    assert batch[0]["image"].dtype == torch.uint8 and batch[0]["image"].shape == (3, 64, 64)
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        build_detection_train_loader(synthetic_train, mapper=mapper, total_batch_size=0)


def test_test_loader_covers_the_shard_in_order(monkeypatch, synthetic_train):
    loader = build_detection_test_loader(
        synthetic_train, mapper=lambda d: d["image_id"], batch_size=4
    )
    assert len(loader) == 3 and list(itertools.chain(*loader)) == list(range(10))
    _as_rank(monkeypatch, 1, 2)
    shard = build_detection_test_loader("loader_syn", mapper=lambda d: d["image_id"])
    assert list(itertools.chain(*shard)) == [5, 6, 7, 8, 9]


def test_seeded_random_state_seeds_and_restores_only_host_generators(monkeypatch):
    import random

    import numpy as np

    from detrex_ext.data.common import seeded_random_state

    def no_accelerator_seeding(*args, **kwargs):
        raise AssertionError("the mapper's seeding must not touch accelerator generators")

    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    before = (torch.rand(2), np.random.rand(2), random.random())
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    with monkeypatch.context() as patch:
        patch.setattr(torch.cuda, "manual_seed_all", no_accelerator_seeding)
        patch.setattr(torch.cuda, "manual_seed", no_accelerator_seeding)
        with seeded_random_state(2**40 + 7):
            inside = (torch.rand(3), np.random.rand(3), random.random())
    after = (torch.rand(2), np.random.rand(2), random.random())
    expected_torch = torch.rand(3, generator=torch.Generator().manual_seed(2**40 + 7))
    assert torch.equal(inside[0], expected_torch)
    assert np.array_equal(inside[1], np.random.RandomState((2**40 + 7) % 2**32).rand(3))
    assert inside[2] == random.Random(2**40 + 7).random()
    # the caller's streams continue as if the block had not run
    assert torch.equal(after[0], before[0]) and np.array_equal(after[1], before[1])
    assert after[2] == before[2]
