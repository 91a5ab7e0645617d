"""ResumableLoader over the real build_detection_train_loader: after a restore it yields exactly
the batches (order and random augmentations) an uninterrupted loader would have yielded."""

from __future__ import annotations

import itertools

import numpy as np
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
