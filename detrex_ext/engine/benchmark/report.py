"""The text report of ``tools/benchmark.py``: one row per figure, one column per precision."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from typing import Any

import torch
from tabulate import tabulate

__all__ = ["device_description", "format_table", "gain", "memory_kind"]


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def memory_kind(device: str) -> str:
    if device.startswith("cuda"):
        return "peak memory (CUDA allocator)"
    return "peak memory (process RSS, lifetime max)"


def _size(values: Sequence[int]) -> str:
    return "x".join(str(v) for v in values)


def _figure_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(label, unit, section, key, statistic) of every figure the results hold."""
    rows = []
    memory = memory_kind(results["device"])
    if results.get("inference"):
        where = f"batch 1 @ {_size(results['inference_size'])}"
        modules = "+".join(results["inference"]["network_modules"])
        for label, key in (
            (f"inference compute only ({modules}), {where}", "compute_only"),
            ("- post-processing", "post_processing"),
            (f"inference end to end (Predictor, in-memory image), {where}", "end_to_end"),
            ("- end to end from file (JPEG decode, outputs to CPU)", "end_to_end_from_file"),
        ):
            rows.append((label, "ms", "inference", key, "median_ms"))
        rows.append(("- images/s end to end", "img/s", "inference", "end_to_end", "images_per_s"))
        rows.append((f"- inference {memory}", "MiB", "inference", "peak_memory_mib", ""))
    if results.get("training"):
        recipe = results["training"]
        counts = "+".join(str(c) for c in recipe["instances_per_image"])
        step = f"training step, batch {recipe['batch_size']} @ {_size(recipe['image_size'])}"
        rows.append((f"{step} ({counts} instances)", "ms", "training", "step", "median_ms"))
        for label, key in (
            ("- forward incl. losses (synchronised)", "forward"),
            ("- backward (synchronised)", "backward"),
            ("- optimizer incl. clipping (synchronised)", "optimizer"),
        ):
            rows.append((label, "ms", "training", key, "median_ms"))
        rows.append(("- sum of the synchronised split", "ms", "training", "split_sum_ms", ""))
        rows.append(("- images/s training", "img/s", "training", "step", "images_per_s"))
        rows.append((f"- training {memory}", "MiB", "training", "peak_memory_mib", ""))
    return rows


def _figure(results: dict[str, Any], section: str, precision: str, key: str, stat: str) -> float:
    value = results[section][precision][key]
    return value[stat] if stat else value


def gain(baseline: float, value: float, unit: str) -> float:
    """How many times better ``value`` is than ``baseline``: rates higher, times/memory lower."""
    if unit == "img/s":
        return value / baseline if baseline > 0 else float("nan")
    return baseline / value if value > 0 else float("nan")


def format_table(results: dict[str, Any]) -> str:
    """One row per figure, one column per precision, then each precision's gain over the first."""
    precisions = results["precisions"]
    headers = ["figure", "unit", *precisions]
    headers += [f"{p} gain vs {precisions[0]}" for p in precisions[1:]]
    rows = []
    for label, unit, section, key, stat in _figure_rows(results):
        values = [_figure(results, section, p, key, stat) for p in precisions]
        gains = [f"{gain(values[0], v, unit):.2f}x" for v in values[1:]]
        rows.append([label, unit, *values, *gains])
    head = (
        f"{results['config']} | {results['device_name']} | torch {results['torch']} | "
        f"{results['parameters'] / 1e6:.2f}M parameters | clip_grad {results['clip_grad']} | "
        f"median of {results['repeats']} after {results['warmup']} warm-up"
    )
    return "\n".join([head, tabulate(rows, headers=headers, floatfmt=".1f")])
