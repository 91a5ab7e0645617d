"""Ours vs the official Mask DINO on the CPU, side by side (``tools/benchmark.py --official-root``).

The official model of the same config is built from an exported tree (see
:mod:`detrex_projects.maskdino.official`) with our weights; both run the same synthetic inputs in
one process, alternating every round (:mod:`detrex_ext.engine.benchmark.side_by_side`), and their
outputs and losses are compared. ``profile=True`` adds one profiled inference call and training
step of each (module shares, top operators).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from detrex_ext.engine.benchmark import (
    Contender,
    compare_inference_outputs,
    compare_losses,
    format_profile,
    instance_counts,
    profile_call,
    side_by_side_inference,
    side_by_side_training,
    synthetic_image_batch,
    synthetic_training_batch,
)

from . import official

__all__ = ["compare_with_official"]

logger = logging.getLogger(__name__)

Sizes = Sequence[Sequence[tuple[int, int]]]
# Deformable attention modules, profiled as one scope each: ours, the official one.
MSDA_CLASSES = ("MultiScaleDeformableAttention", "MSDeformAttn")


def _text(sizes: Sequence[Sequence[int]]) -> str:
    return " + ".join("x".join(str(v) for v in size) for size in sizes)


def compare_with_official(
    model: torch.nn.Module,
    config: Any,
    official_root: str | Path,
    *,
    sizes: Sizes,
    train_sizes: Sizes,
    train_instances: int | Sequence[int],
    num_classes: int,
    warmup: int,
    repeats: int,
    profile: bool = False,
) -> dict[str, Any]:
    """Side-by-side inference on every ``sizes`` batch and training steps on every
    ``train_sizes`` batch (see the module docstring); JSON-ready results."""
    reference = official.build_official_model(official_root, config, model.state_dict())
    contenders = {
        "official": Contender(
            reference, official.to_official_inputs, official.cpu_only_tensor_moves
        ),
        "ours": Contender(model),
    }
    results: dict[str, Any] = {"inference": [], "training": []}
    for batch_sizes in sizes:
        logger.info(f"inference side by side, batch {_text(batch_sizes)}")
        timed = side_by_side_inference(
            contenders,
            synthetic_image_batch(batch_sizes),
            warmup=warmup,
            repeats=repeats,
            log=logger.info,
        )
        outputs = timed.pop("outputs")
        timed["sizes"] = [list(s) for s in batch_sizes]
        timed["agreement"] = compare_inference_outputs(outputs["official"], outputs["ours"])
        results["inference"].append(timed)
    for batch_sizes in train_sizes:
        logger.info(f"training step side by side, batch {_text(batch_sizes)}")
        counts = instance_counts(train_instances, len(batch_sizes))
        batch = synthetic_training_batch(len(batch_sizes), batch_sizes, num_classes, counts)
        timed = side_by_side_training(
            contenders, batch, warmup=max(1, warmup), repeats=repeats, log=logger.info
        )
        timed["sizes"] = [list(s) for s in batch_sizes]
        timed["instances_per_image"] = counts
        timed["agreement"] = compare_losses(timed["official"]["losses"], timed["ours"]["losses"])
        results["training"].append(timed)
    if profile:
        results["profiles"] = _profiles(
            contenders, sizes[:1], train_sizes[:1], train_instances, num_classes
        )
    return results


def _profiles(contenders, sizes, train_sizes, train_instances, num_classes) -> dict[str, Any]:
    """One profiled inference call and training step per contender, printed and returned."""
    profiles: dict[str, Any] = {}
    for name, contender in contenders.items():
        model = contender.model
        for batch_sizes in sizes:
            inputs = contender.adapt(synthetic_image_batch(batch_sizes))
            model.eval()

            def infer(model=model, inputs=inputs, contender=contender):
                with contender.context(), torch.no_grad():
                    model([dict(x) for x in inputs])

            profiles[f"{name} inference, batch {_text(batch_sizes)}"] = profile_call(
                infer, model, depth=3, by_class=MSDA_CLASSES
            )
        for batch_sizes in train_sizes:
            counts = instance_counts(train_instances, len(batch_sizes))
            batch = synthetic_training_batch(len(batch_sizes), batch_sizes, num_classes, counts)
            inputs = contender.adapt(batch)
            model.train()

            def step(model=model, inputs=inputs, contender=contender):
                with contender.context():
                    torch.manual_seed(0)
                    total = sum(model([dict(x) for x in inputs]).values())
                    with torch.profiler.record_function("phase::backward"):
                        total.backward()
                model.zero_grad(set_to_none=True)

            profiles[f"{name} training step, batch {_text(batch_sizes)}"] = profile_call(
                step, model, depth=3, by_class=MSDA_CLASSES
            )
            model.eval()
    for title, result in profiles.items():
        print(format_profile(title, result))
        result.pop("table")
    return profiles
