"""Result printing helpers: ``print_csv_format``, ``flatten_results_dict``, ``verify_results``."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)


def print_csv_format(results: Mapping[str, Any]) -> None:
    """Log the main metrics as ``copypaste:`` lines, easy to paste into a spreadsheet.

    For each task: one line with the metric names and one with the values (4 decimals).
    Per-class metrics (names containing ``-``, e.g. ``AP-person``) are left out.
    """
    if not isinstance(results, Mapping):
        raise TypeError(f"results must be a dict of task -> metrics, got {type(results)}")
    for task, res in results.items():
        if isinstance(res, Mapping):
            main = [(k, v) for k, v in res.items() if "-" not in k]
            logger.info("copypaste: Task: %s", task)
            logger.info("copypaste: %s", ",".join(k for k, _ in main))
            logger.info("copypaste: %s", ",".join(f"{float(v):.4f}" for _, v in main))
        else:
            logger.info("copypaste: %s=%s", task, res)


def flatten_results_dict(results: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten nested dicts: ``{"bbox": {"AP": 1.0}}`` -> ``{"bbox/AP": 1.0}``."""
    flat: dict[str, Any] = {}
    for key, value in results.items():
        if isinstance(value, Mapping):
            for sub_key, sub_value in flatten_results_dict(value).items():
                flat[f"{key}/{sub_key}"] = sub_value
        else:
            flat[key] = value
    return flat


def verify_results(
    results: Mapping[str, Mapping[str, float]],
    expected_results: list[tuple[str, str, float, float]],
) -> bool:
    """Check results against ``[(task, metric, expected, tolerance), ...]``.

    Returns True when every metric exists, is finite and lies within its tolerance; logs each
    failure otherwise (detectron2 exits the process instead; the caller decides here).
    """
    ok = True
    for task, metric, expected, tolerance in expected_results:
        actual = results.get(task, {}).get(metric)
        if actual is None or not math.isfinite(actual) or abs(actual - expected) > tolerance:
            logger.error(
                "Result verification failed: %s/%s = %s, expected %s +- %s",
                task,
                metric,
                actual,
                expected,
                tolerance,
            )
            ok = False
    return ok
