"""ResumableLoader over the real build_detection_train_loader: after a restore it yields exactly
the batches (order and random augmentations) an uninterrupted loader would have yielded."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from engine_tiny_task import TinyTrainLoader

from detrex_ext.config import LazyCall as L
from detrex_ext.data import build_detection_train_loader
from detrex_ext.engine.resumable_loader import ResumableLoader, build_train_loader


def _augment(record: dict) -> dict:
    """A mapper with randomness, like a random flip/scale would have."""
    return {"image_id": record["image_id"], "jitter": float(np.random.rand())}


def _loader_cfg():
    dicts = [{"image_id": i, "height": 8, "width": 10} for i in range(11)]
    return L(build_detection_train_loader)(
        dataset=dicts,
        mapper=_augment,
        total_batch_size=3,
        num_workers=0,
        aspect_ratio_grouping=False,
        seed=None,
    )


def _take(iterator, n: int) -> list:
    return [
        [(d["image_id"], d["jitter"]) for d in batch] for batch in itertools.islice(iterator, n)
    ]


def test_restored_loader_continues_the_exact_stream() -> None:
    first = build_train_loader(_loader_cfg(), seed=123)
    assert isinstance(first, ResumableLoader)
    stream = iter(first)
    _take(stream, 7)
    state = first.state_dict()
    assert state == {"batches_consumed": 7, "seed": 123}
    expected = _take(stream, 5)  # crosses the epoch boundary (11 images, 3 per batch)

    resumed = build_train_loader(_loader_cfg(), seed=999)  # a fresh run would pick another seed
    resumed.load_state_dict(state)
    assert _take(iter(resumed), 5) == expected

    other_seed = build_train_loader(_loader_cfg(), seed=124)
    other_seed.load_state_dict({"batches_consumed": 7})
    assert _take(iter(other_seed), 5) != expected


def test_loaders_without_start_iter_are_used_as_they_are() -> None:
    loader = build_train_loader(L(TinyTrainLoader)(batch_size=2), seed=1)
    assert isinstance(loader, TinyTrainLoader)


def _random_draws() -> tuple:
    """One draw from each global generator (python, numpy, torch)."""
    import random

    import torch

    return random.random(), float(np.random.rand()), float(torch.rand(()))


def _demo_loader_cfg(aspect_ratio_grouping: bool, num_workers: int = 0):
    from detrex_ext.config import get_config

    cfg = get_config("maskdino/maskdino_demo_synthetic.py").dataloader.train
    cfg.aspect_ratio_grouping = aspect_ratio_grouping
    cfg.num_workers = num_workers
    cfg.total_batch_size = 2
    cfg.seed = None  # the launcher's data seed applies
    return cfg


@pytest.mark.parametrize(
    "grouping, workers", [(True, 0), (False, 0), (True, 1)], ids=["grouped", "plain", "worker"]
)
def test_building_and_first_batch_leave_global_random_streams_alone(grouping, workers) -> None:
    """The trainer seeds every iteration, then draws the first batch of a lazily built loader; if
    that drew from the global generators, a resumed run would start its first iteration with other
    model random numbers (denoising noise, point sampling) than the uninterrupted run had there."""
    import random

    import torch

    from detrex_ext.data import catalog_snapshot

    with catalog_snapshot():
        loader = build_train_loader(_demo_loader_cfg(grouping, workers), seed=5)
        random.seed(7), np.random.seed(7), torch.manual_seed(7)
        expected = _random_draws()
        random.seed(7), np.random.seed(7), torch.manual_seed(7)
        batch = next(iter(loader))
        assert len(batch) == 2 and batch[0]["image"].shape == (3, 96, 96)
        assert _random_draws() == expected


def _drawing_builder(start_iter: int = 0, seed: int | None = None):
    """A loader builder that draws from the global generators while it builds (as a dataset
    function that shuffles with ``random`` would)."""
    import random

    import torch

    offset = random.random() + float(np.random.rand()) + float(torch.rand(()))
    return iter([[{"offset": offset, "index": i}] for i in range(start_iter, start_iter + 3)])


def test_resumable_loader_builds_without_shifting_global_random_streams() -> None:
    import random

    import torch

    loader = build_train_loader(L(_drawing_builder)(), seed=1)
    assert isinstance(loader, ResumableLoader)
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    expected = _random_draws()
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    assert next(iter(loader))[0]["index"] == 0
    assert _random_draws() == expected
