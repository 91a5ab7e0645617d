"""Side-by-side timings of several models on the same inputs, alternating, with output checks.

Each *contender* is a model with the detectron2 call convention (a list of input dicts; training
mode returns a loss dict, eval mode one result dict per image), plus how to adapt the inputs to
it and a context it runs in (e.g. another code base's structures and device patches). Every round
runs each contender once, in turn, so a change of machine load hits them alike; compare the
medians and the per-round ratios, not single runs. Before every training step the global seed is
reset, so contenders that draw the same random numbers in the same order (denoising noise,
point sampling) compute the same losses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tabulate import tabulate
from torch import nn

from .timing import NetworkTimer, summarize

__all__ = [
    "Contender",
    "compare_inference_outputs",
    "compare_losses",
    "format_side_by_side",
    "side_by_side_inference",
    "side_by_side_training",
]


@dataclasses.dataclass
class Contender:
    """A model in a side-by-side run.

    Attributes:
        model: called with a list of input dicts (detectron2 convention).
        adapt: maps our input dicts to the ones the model takes (default: unchanged).
        context: returns a context manager the model runs in (default: none).
    """

    model: nn.Module
    adapt: Callable[[list[dict]], list[dict]] = list
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


def _median_ms(seconds: Sequence[float]) -> float:
    return 1000 * statistics.median(seconds)


def _ratios(times: dict[str, list[float]], reference: str) -> dict[str, Any]:
    """Per other contender: median of the per-round ratios and ratio of the medians."""
    out = {}
    for name, seconds in times.items():
        if name == reference:
            continue
        rounds = [a / b for a, b in zip(seconds, times[reference]) if b > 0]
        out[name] = {
            "ratio_of_medians": statistics.median(seconds) / statistics.median(times[reference]),
            "median_of_round_ratios": statistics.median(rounds) if rounds else float("nan"),
        }
    return out


def side_by_side_inference(
    contenders: dict[str, Contender],
    batch: list[dict],
    *,
    warmup: int,
    repeats: int,
    reference: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Eval-mode model calls (``torch.no_grad``) on ``batch``, alternating contenders.

    Returns:
        per contender ``end_to_end`` (the model call, post-processing included) and
        ``compute_only`` (time inside its parameter-holding children: backbone, head) as
        :func:`summarize` dicts; ``ratios`` of every contender to ``reference`` (default: the
        first); ``outputs``: each contender's last outputs (not JSON).
    """
    reference = reference or next(iter(contenders))
    inputs = {name: c.adapt([dict(x) for x in batch]) for name, c in contenders.items()}
    timers = {name: NetworkTimer(c.model, torch.device("cpu")) for name, c in contenders.items()}
    calls: dict[str, list[float]] = {name: [] for name in contenders}
    compute: dict[str, list[float]] = {name: [] for name in contenders}
    outputs: dict[str, Any] = {}
    try:
        for run in range(warmup + repeats):
            for name, contender in contenders.items():
                contender.model.eval()
                timers[name].seconds = 0.0
                with contender.context(), torch.no_grad():
                    start = time.perf_counter()
                    outputs[name] = contender.model([dict(x) for x in inputs[name]])
                    seconds = time.perf_counter() - start
                if run >= warmup:
                    calls[name].append(seconds)
                    compute[name].append(timers[name].seconds)
                if log is not None:
                    log(f"inference round {run} {name}: {seconds:.3f} s")
    finally:
        for timer in timers.values():
            timer.remove()
    result: dict[str, Any] = {
        name: {"end_to_end": summarize(calls[name]), "compute_only": summarize(compute[name])}
        for name in contenders
    }
    result["ratios"] = {
        "end_to_end": _ratios(calls, reference),
        "compute_only": _ratios(compute, reference),
    }
    result["outputs"] = outputs
    return result


def side_by_side_training(
    contenders: dict[str, Contender],
    batch: list[dict],
    *,
    warmup: int,
    repeats: int,
    seed: int = 0,
    reference: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Training steps (forward incl. losses, then backward of their sum; no optimizer step) on
    ``batch``, alternating contenders, the global seed reset to ``seed`` before each.

    Returns:
        per contender ``forward``, ``backward`` and ``step`` (their sum) as :func:`summarize`
        dicts and ``losses`` (the last step's loss dict as floats); ``ratios`` to ``reference``.
    """
    reference = reference or next(iter(contenders))
    phases = {name: {"forward": [], "backward": [], "step": []} for name in contenders}
    losses: dict[str, dict[str, float]] = {}
    for run in range(warmup + repeats):
        for name, contender in contenders.items():
            model = contender.model
            model.train()
            model.zero_grad(set_to_none=True)
            inputs = contender.adapt([dict(x) for x in batch])
            with contender.context():
                torch.manual_seed(seed)
                start = time.perf_counter()
                loss_dict = model(inputs)
                total = sum(loss_dict.values())
                middle = time.perf_counter()
                total.backward()
                end = time.perf_counter()
            model.zero_grad(set_to_none=True)
            losses[name] = {k: float(v.detach()) for k, v in loss_dict.items()}
            if run >= warmup:
                phases[name]["forward"].append(middle - start)
                phases[name]["backward"].append(end - middle)
                phases[name]["step"].append(end - start)
            if log is not None:
                log(
                    f"training round {run} {name}: {end - start:.3f} s, loss {float(total.detach()):.4f}"
                )
    for contender in contenders.values():
        contender.model.eval()
    result: dict[str, Any] = {
        name: {**{k: summarize(v, len(batch)) for k, v in phases[name].items()}}
        for name in contenders
    }
    for name in contenders:
        result[name]["losses"] = losses[name]
    result["ratios"] = {
        key: _ratios({n: phases[n][key] for n in contenders}, reference)
        for key in ("forward", "backward", "step")
    }
    return result


def compare_inference_outputs(
    reference: list[dict], other: list[dict], top_k: int = 100
) -> list[dict[str, Any]]:
    """Per image: the ``top_k`` instances of both by descending score (max score difference,
    whether the classes agree position by position, max box difference in pixels) and the
    largest semantic-map difference, for the outputs both have."""
    images = []
    for ref, ours in zip(reference, other):
        report: dict[str, Any] = {}
        if "instances" in ref and "instances" in ours:
            a, b = ref["instances"], ours["instances"]
            a_scores, a_order = a.scores.sort(descending=True)
            b_scores, b_order = b.scores.sort(descending=True)
            k = min(top_k, len(a_scores), len(b_scores))
            a_classes = a.pred_classes[a_order[:k]].tolist()
            b_classes = b.pred_classes[b_order[:k]].tolist()
            a_boxes = a.pred_boxes.tensor[a_order[:k]]
            b_boxes = b.pred_boxes.tensor[b_order[:k]]
            report.update(
                {
                    "num_instances": [len(a_scores), len(b_scores)],
                    "top_k": k,
                    "max_abs_score_diff": float((a_scores[:k] - b_scores[:k]).abs().max())
                    if k
                    else 0.0,
                    "classes_equal": a_classes == b_classes,
                    "max_abs_box_diff_px": float((a_boxes - b_boxes).abs().max()) if k else 0.0,
                }
            )
        if "sem_seg" in ref and "sem_seg" in ours:
            diff = (ref["sem_seg"].float() - ours["sem_seg"].float()).abs().max()
            report["sem_seg_max_abs_diff"] = float(diff)
        images.append(report)
    return images


def compare_losses(reference: dict[str, float], other: dict[str, float]) -> dict[str, Any]:
    """Same loss names; the relative difference of the totals, the largest absolute difference of
    a term (relative to the reference total)."""
    shared = sorted(set(reference) & set(other))
    total_a, total_b = sum(reference.values()), sum(other.values())
    scale = max(abs(total_a), 1e-12)
    return {
        "same_names": set(reference) == set(other),
        "num_terms": [len(reference), len(other)],
        "total": [total_a, total_b],
        "total_relative_diff": abs(total_a - total_b) / scale,
        "max_term_diff_relative_to_total": max(
            (abs(reference[k] - other[k]) / scale for k in shared), default=0.0
        ),
    }


def _size_text(sizes: Sequence[Sequence[int]]) -> str:
    return " + ".join("x".join(str(v) for v in size) for size in sizes)


# (section, ((figure key, row label), ...)) of the side-by-side table
_SIDE_BY_SIDE_FIGURES = (
    ("inference", (("end_to_end", "inference end to end"), ("compute_only", "- compute only"))),
    (
        "training",
        (
            ("step", "training step (fwd + bwd)"),
            ("forward", "- forward incl. losses"),
            ("backward", "- backward"),
        ),
    ),
)


def format_side_by_side(results: dict[str, Any]) -> str:
    """One row per figure: official ms, ours ms, ratio of the medians, median per-round ratio."""
    rows = []
    for section, figures in _SIDE_BY_SIDE_FIGURES:
        for timed in results["side_by_side"][section]:
            where = _size_text(timed["sizes"])
            for key, label in figures:
                ratio = timed["ratios"][key]["ours"]
                rows.append(
                    [
                        f"{label}, batch {where}",
                        timed["official"][key]["median_ms"],
                        timed["ours"][key]["median_ms"],
                        ratio["ratio_of_medians"],
                        ratio["median_of_round_ratios"],
                    ]
                )
    headers = ["figure", "official ms", "ours ms", "ours / official", "median round ratio"]
    lines = [
        f"{results['config']} vs the official code | {results['device_name']} | torch "
        f"{results['torch']} | median of {results['repeats']} rounds after {results['warmup']} "
        f"warm-up, alternating | load average {results['load_average_start']} -> "
        f"{results['load_average_end']}",
        tabulate(rows, headers=headers, floatfmt=(None, ".1f", ".1f", ".3f", ".3f")),
    ]
    for timed in results["side_by_side"]["inference"]:
        for i, image in enumerate(timed["agreement"]):
            if "max_abs_score_diff" in image:
                lines.append(
                    f"outputs {_size_text(timed['sizes'])}, image {i}: top-{image['top_k']} "
                    f"scores max |d| {image['max_abs_score_diff']:.2e}, classes "
                    f"{'equal' if image['classes_equal'] else 'DIFFER'}, boxes max |d| "
                    f"{image['max_abs_box_diff_px']:.2e} px"
                )
            if "sem_seg_max_abs_diff" in image:
                lines.append(f"  sem_seg max |d| {image['sem_seg_max_abs_diff']:.2e}")
    for timed in results["side_by_side"]["training"]:
        agreement = timed["agreement"]
        lines.append(
            f"losses {_size_text(timed['sizes'])}: {agreement['num_terms'][1]} terms "
            f"({'same names' if agreement['same_names'] else 'DIFFERENT NAMES'}), total "
            f"{agreement['total'][0]:.6g} vs {agreement['total'][1]:.6g} (relative |d| "
            f"{agreement['total_relative_diff']:.1e})"
        )
    return "\n".join(lines)
