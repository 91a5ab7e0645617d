"""Sweep expansion for ``train_net.py --multirun`` (hydra's override grammar and basic sweeper
semantics).

``optimizer.lr=1e-4,2e-4 train.seed=range(1,3)`` expands to the cartesian product of the swept
values, in command-line order (the last key varies fastest), like hydra's ``BasicSweeper``. Each
job gets its own output folder named after its swept values, e.g.
``<train.output_dir>/optimizer.lr=0.0001,train.seed=1``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, ValueType

__all__ = ["SweepJob", "expand_sweep", "find_sweep_overrides"]


@dataclass(frozen=True)
class SweepJob:
    """One combination of a sweep.

    Attributes:
        overrides: all ``key=value`` overrides of the job (fixed ones first).
        swept: the ``(key, value)`` pairs chosen for this job.
        dirname: folder name of the job, from ``swept``.
    """

    overrides: list[str]
    swept: list[tuple[str, str]] = field(default_factory=list)
    dirname: str = ""


def _prefix(override: Override) -> str:
    return {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++"}.get(override.type, "")


def _parse(opts: Sequence[str]) -> list[Override]:
    return OverridesParser.create().parse_overrides(list(opts))


def find_sweep_overrides(opts: Sequence[str]) -> list[str]:
    """The overrides in ``opts`` that are sweeps (``a=1,2``, ``a=range(...)``...)."""
    return [o.input_line for o in _parse(opts) if o.is_sweep_override()]


def _dirname(swept: Sequence[tuple[str, str]]) -> str:
    name = ",".join(f"{key}={value}" for key, value in swept)
    # keep it a single, shell-friendly path component
    return re.sub(r"[^A-Za-z0-9_.,=+\-]", "_", name)[:200] or "job"


def expand_sweep(opts: Sequence[str]) -> list[SweepJob]:
    """Expand sweep overrides into jobs.

    Args:
        opts: command-line overrides; non-sweep ones are kept verbatim in every job.

    Returns:
        One ``SweepJob`` per combination (a single job with ``swept=[]`` when nothing sweeps).

    Raises:
        ValueError: for sweeps that cannot be enumerated (``interval(...)``, ``glob(...)``) or a
            key swept twice.
    """
    fixed: list[str] = []
    axes: list[tuple[str, list[str]]] = []
    for override in _parse(opts):
        if not override.is_sweep_override():
            fixed.append(override.input_line)
            continue
        if override.value_type in (ValueType.INTERVAL_SWEEP, ValueType.GLOB_CHOICE_SWEEP):
            raise ValueError(
                f"Cannot enumerate the sweep {override.input_line!r}: only comma lists "
                "(a=1,2,3), choice(...) and range(...) sweeps are supported."
            )
        key = _prefix(override) + override.key_or_group
        if any(existing == key for existing, _ in axes):
            raise ValueError(f"Key {override.key_or_group!r} is swept twice")
        axes.append((key, list(override.sweep_string_iterator())))
    if not axes:
        return [SweepJob(overrides=fixed)]
    jobs = []
    for values in itertools.product(*(values for _, values in axes)):
        swept = [(key.lstrip("+"), value) for (key, _), value in zip(axes, values)]
        job_overrides = fixed + [f"{key}={value}" for (key, _), value in zip(axes, values)]
        jobs.append(SweepJob(overrides=job_overrides, swept=swept, dirname=_dirname(swept)))
    return jobs
