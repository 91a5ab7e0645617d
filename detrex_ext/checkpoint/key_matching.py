"""Key matching between a checkpoint and a model, and the report of what did not match.

``align_by_suffix`` implements detectron2's "matching heuristics" (used by model-zoo ``.pkl``
files such as ``R-50.pkl``): each model key takes the longest checkpoint key that is a
dot-aligned suffix of it, so ``res2.0.conv1.weight`` loads into ``backbone.res2.0.conv1.weight``.

``incompatible_keys_table`` renders missing, unexpected and shape-mismatched keys as one table,
with keys that share a module grouped (``head.{bias, weight}``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tabulate import tabulate

__all__ = ["LoadReport", "align_by_suffix", "group_keys", "incompatible_keys_table"]

logger = logging.getLogger(__name__)


def align_by_suffix(
    model_keys: Iterable[str], checkpoint_state: Mapping[str, object]
) -> dict[str, object]:
    """Rename checkpoint keys to the model keys they are the longest dot-aligned suffix of.

    Args:
        model_keys: keys of the model's state dict.
        checkpoint_state: checkpoint key -> tensor.

    Returns:
        A new state dict: matched entries under model names, unmatched ones under their own.

    Raises:
        ValueError: when one checkpoint key is the best match of several model keys.
    """
    matches: dict[str, str] = {}  # model key -> checkpoint key
    for model_key in model_keys:
        parts = model_key.split(".")
        # the longest suffix first: parts[0:], parts[1:], ...
        for start in range(len(parts)):
            candidate = ".".join(parts[start:])
            if candidate in checkpoint_state:
                matches[model_key] = candidate
                break
    users: defaultdict[str, list[str]] = defaultdict(list)
    for model_key, checkpoint_key in matches.items():
        users[checkpoint_key].append(model_key)
    ambiguous = {c: m for c, m in users.items() if len(m) > 1}
    if ambiguous:
        first = next(iter(ambiguous.items()))
        raise ValueError(
            f"Checkpoint key {first[0]!r} matches several model keys {sorted(first[1])} by "
            f"suffix ({len(ambiguous)} ambiguous keys in all); load without matching heuristics "
            "or rename the checkpoint keys first."
        )
    aligned = {model_key: checkpoint_state[c] for model_key, c in matches.items()}
    used = set(matches.values())
    for key, value in checkpoint_state.items():
        if key not in used:
            aligned.setdefault(key, value)
    renamed = [(m, c) for m, c in matches.items() if m != c]
    if renamed:
        logger.info(f"Matched {len(renamed)} checkpoint keys to model keys by suffix.")
        logger.debug("Suffix matches:\n" + tabulate(renamed, headers=["model key", "checkpoint"]))
    return aligned


def group_keys(keys: Iterable[str]) -> list[str]:
    """``["a.b.weight", "a.b.bias", "c"]`` -> ``["a.b.{bias, weight}", "c"]`` (sorted)."""
    groups: defaultdict[str, list[str]] = defaultdict(list)
    singles = []
    for key in keys:
        head, dot, tail = key.rpartition(".")
        if dot:
            groups[head].append(tail)
        else:
            singles.append(key)
    out = list(singles)
    for head, tails in groups.items():
        tails = sorted(tails)
        out.append(f"{head}.{tails[0]}" if len(tails) == 1 else f"{head}.{{{', '.join(tails)}}}")
    return sorted(out)


def incompatible_keys_table(
    missing: Sequence[str],
    unexpected: Sequence[str],
    incorrect_shapes: Sequence[tuple[str, tuple, tuple]],
) -> str:
    """A table of problems; empty string when there is none.

    Args:
        missing: model keys absent from the checkpoint.
        unexpected: checkpoint keys the model does not have.
        incorrect_shapes: ``(key, checkpoint shape, model shape)`` of skipped entries.
    """
    rows = [
        ("shape mismatch (skipped)", key, tuple(ckpt), tuple(model))
        for key, ckpt, model in sorted(incorrect_shapes)
    ]
    rows += [("missing in checkpoint", key, "", "") for key in group_keys(missing)]
    rows += [("unexpected in checkpoint", key, "", "") for key in group_keys(unexpected)]
    if not rows:
        return ""
    return tabulate(rows, headers=["problem", "key", "checkpoint shape", "model shape"])


class LoadReport:
    """How a checkpoint's model tensors matched the model (``DetectionCheckpointer.last_load``).

    Args:
        path: the file loaded.
        num_model_tensors: entries of the model's state dict.
        missing: model keys the checkpoint lacks (fvcore also lists shape-skipped keys here).
        mismatched: ``(key, checkpoint shape, model shape)`` of entries skipped for their shape.
        unexpected: checkpoint keys the model does not have.
        recomputed: keys the model recomputes itself (``pixel_mean``): missing, but no problem.
    """

    def __init__(
        self,
        path: str,
        num_model_tensors: int,
        missing: Sequence[str],
        mismatched: Sequence[tuple[str, Any, Any]],
        unexpected: Sequence[str],
        recomputed: Iterable[str] = (),
    ):
        self.path = path
        self.num_model_tensors = num_model_tensors
        self.mismatched = list(mismatched)
        skipped = {key for key, _, _ in self.mismatched}
        self.missing = [k for k in missing if k not in skipped]
        self.unexpected = list(unexpected)
        self._recomputed = set(recomputed)

    @property
    def num_loaded(self) -> int:
        return self.num_model_tensors - len(self.missing) - len(self.mismatched)

    @property
    def complete(self) -> bool:
        """Every model tensor came from the checkpoint (recomputed buffers aside)."""
        return not self.mismatched and all(k in self._recomputed for k in self.missing)

    def summary(self) -> str:
        """``"0 of 256 model tensors found in X (...)"``."""
        text = f"{self.num_loaded} of {self.num_model_tensors} model tensors found in {self.path}"
        details = []
        if self.mismatched:
            key, ckpt, model = self.mismatched[0]
            details.append(
                f"{len(self.mismatched)} with another shape, e.g. {key}: {tuple(ckpt)} in the "
                f"checkpoint, {tuple(model)} in the model"
            )
        if self.missing:
            details.append(f"{len(self.missing)} missing, e.g. {self.missing[0]}")
        return text + (f" ({'; '.join(details)})" if details else "")
