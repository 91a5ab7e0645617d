"""Checks of a launcher config before anything is built: the top-level sections a run needs and
the ``train.*`` values the launcher reads (types, ranges, the device), each problem named by its
key with what to write instead.

``check_config(cfg)`` raises one :class:`InvalidConfigError` that lists every problem found, so a
bad ``train.max_iter=-5`` or ``train.device=gpu`` stops the run in a second instead of after the
model was built (or, for a period of 0, hours later with a ZeroDivisionError).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = ["InvalidConfigError", "check_config", "check_sections", "required_sections"]

_TRAINING_SECTIONS = ("model", "dataloader", "optimizer", "lr_multiplier", "train")
_EVALUATION_SECTIONS = ("model", "dataloader", "train")
_CHECKPOINTER_KEYS = {"period", "max_to_keep", "file_prefix"}


class InvalidConfigError(ValueError):
    """A config the launcher cannot run; the message names every bad key and the fix."""


def required_sections(eval_only: bool = False) -> tuple[str, ...]:
    """Top-level keys a training run (or an ``--eval-only`` run) needs."""
    return _EVALUATION_SECTIONS if eval_only else _TRAINING_SECTIONS


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_at_least(minimum: int, meaning: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if _is_int(value) and value >= minimum:
            return None
        return f"must be an integer >= {minimum} ({meaning})"

    return check


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _optional_string(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return None
    return "must be a path, a URL, a model name, or empty"


def _output_dir(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return None
    return "must name a folder for checkpoints and logs, e.g. train.output_dir=./output/run1"


def _seed(value: Any) -> str | None:
    if value is None or _is_int(value):
        return None
    return "must be an integer (a negative value or null draws a random seed)"


def _device(value: Any) -> str | None:
    hint = "use cpu, cuda, cuda:1 (a GPU by index) or mps"
    if not isinstance(value, str):
        return f"must be a device name; {hint}"
    try:
        torch.device(value)
    except (RuntimeError, ValueError):
        return f"is not a device; {hint}"
    return None


def _amp_dtype(value: Any) -> str | None:
    names = ("bf16", "bfloat16", "fp16", "float16", "half")
    if isinstance(value, str) and value.lower() in names:
        return None
    return "must be bf16 or fp16"


def _positive_number(value: Any) -> str | None:
    return None if _is_number(value) and value > 0 else "must be a number > 0"


def _decay(value: Any) -> str | None:
    return None if _is_number(value) and 0 < value < 1 else "must be a number between 0 and 1"


def _optional_keep(value: Any) -> str | None:
    if value is None or (_is_int(value) and value >= 1):
        return None
    return "must be an integer >= 1 (checkpoints kept) or null (keep all)"


# (key, check, needed by --eval-only too)
_RULES: list[tuple[str, Callable[[Any], str | None], bool]] = [
    ("train.output_dir", _output_dir, True),
    ("train.init_checkpoint", _optional_string, True),
    ("train.device", _device, True),
    ("train.seed", _seed, True),
    ("train.max_iter", _int_at_least(1, "the number of training iterations"), False),
    (
        "train.eval_period",
        _int_at_least(0, "iterations between evaluations; 0 = at the end"),
        False,
    ),
    ("train.log_period", _int_at_least(1, "iterations between log lines"), False),
    ("train.checkpointer.period", _int_at_least(1, "iterations between checkpoints"), False),
    ("train.checkpointer.max_to_keep", _optional_keep, False),
    ("train.gradient_accumulation_steps", _int_at_least(1, "batches per optimizer step"), False),
    ("train.amp.enabled", _boolean, False),
    ("train.amp.dtype", _amp_dtype, False),
    ("train.clip_grad.enabled", _boolean, False),
    ("train.clip_grad.params.max_norm", _positive_number, False),
    ("train.model_ema.enabled", _boolean, True),
    ("train.model_ema.decay", _decay, False),
    ("dataloader.train.total_batch_size", _int_at_least(1, "images per iteration"), False),
    ("optimizer.lr", _positive_number, False),
]


def _lookup(cfg: DictConfig, key: str) -> tuple[bool, Any, str | None]:
    """``(exists, resolved value, resolution error)`` of a dotted key."""
    parent_key, _, name = key.rpartition(".")
    try:
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        if not isinstance(parent, DictConfig) or name not in parent:
            return False, None, None
        return True, OmegaConf.select(cfg, key, throw_on_missing=True), None
    except OmegaConfBaseException as e:
        return True, None, str(e).splitlines()[0]


def check_sections(cfg: Any, *, eval_only: bool = False, source: str = "the config") -> None:
    """Raise :class:`InvalidConfigError` listing the top-level sections ``cfg`` lacks."""
    if not isinstance(cfg, DictConfig):
        raise InvalidConfigError(f"{source} is not a lazy config (got {type(cfg).__name__})")
    needed = required_sections(eval_only)
    missing = [name for name in needed if name not in cfg or cfg[name] is None]
    if missing:
        run = "an --eval-only run" if eval_only else "a training run"
        raise InvalidConfigError(
            f"{source} lacks {', '.join(missing)}: {run} needs the top-level keys "
            f"{', '.join(needed)} (see projects/maskdino/configs/maskdino_demo_synthetic.py; "
            "train defaults: get_config('common/train.py').train)"
        )
    if not eval_only and "train" not in cfg.dataloader:
        raise InvalidConfigError(f"{source} lacks dataloader.train, the training data loader")


def check_config(cfg: Any, *, eval_only: bool = False, source: str = "the config") -> None:
    """Raise :class:`InvalidConfigError` if ``cfg`` cannot be run by the launcher: missing
    sections (``check_sections``) or ``train.*`` values of the wrong type or range, all listed.

    Args:
        cfg: the loaded config, overrides applied.
        eval_only: check what ``--eval-only`` needs (no optimizer, schedule or training values).
        source: how the message names the config (its file).
    """
    check_sections(cfg, eval_only=eval_only, source=source)
    problems = []
    for key, check, for_eval in _RULES:
        if eval_only and not for_eval:
            continue
        exists, value, error = _lookup(cfg, key)
        if error is not None:
            problems.append(f"{key}: cannot be resolved ({error})")
        elif exists:
            problem = check(value)
            if problem:
                problems.append(f"{key}={value!r} {problem}")
    checkpointer = OmegaConf.select(cfg, "train.checkpointer")
    if isinstance(checkpointer, DictConfig) and not eval_only:
        unknown = sorted(set(checkpointer.keys()) - _CHECKPOINTER_KEYS)
        if unknown:
            problems.append(
                f"train.checkpointer has unknown key(s) {', '.join(unknown)}; it takes "
                f"{', '.join(sorted(_CHECKPOINTER_KEYS))}"
            )
    if problems:
        listing = "\n  ".join(problems)
        raise InvalidConfigError(f"{source} has invalid values:\n  {listing}")
