"""Deterministic values shared by the official-code reference harness and our fidelity test.

Two things make "same weights, same inputs, same random draws" possible without storing weights
or random tensors in the repository:

* :func:`official_weight_value` gives a state-dict entry a value that depends **only** on its key
  name and shape, never on any model's init code. The reference harness applies it to the
  official Mask DINO state_dict; the fidelity test applies it to ours (identical key names), so
  both models hold identical weights.
* :class:`DeterministicRandomDraws` replaces torch's random functions inside a ``with`` block:
  the n-th draw of a given kind and shape returns values derived from (kind, shape, range, n)
  only. Run around the official training forward it records which draws were made; run around
  ours it reproduces exactly the same values, provided our code draws the same kinds and shapes
  in the same relative order (see the class docstring).

The values are chosen to keep a randomly initialised network well conditioned (activations of
order one, attention softmaxes neither flat nor one-hot), not to resemble trained weights.
"""

from __future__ import annotations

import math
import re
import sys
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

#: Entries that are configuration constants or bookkeeping, not weights: keep the model's own.
_KEEP_OWN_VALUE = ("empty_weight", "pixel_mean", "pixel_std", "num_batches_tracked")

#: Shared modules appear under several state_dict names in the official code (spec section 2.3).
#: Every alias is mapped to one canonical name so that all aliases get the same value.
_ALIASES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(.*\.predictor)\.(?:decoder\.)?bbox_embed\.\d+\.(.+)$"), r"\1._bbox_embed.\2"),
    (re.compile(r"^(.*\.predictor)\.decoder\.norm\.(.+)$"), r"\1.decoder_norm.\2"),
)

#: >=2-d entries whose rows are NOT centred: the first convolution (so that a constant offset in
#: the normalised image still shows), embeddings/tables that are looked up rather than multiplied.
_NOT_CENTRED = re.compile(
    r"(^|\.)(stem\.conv1|patch_embed\.proj|label_enc|query_feat|query_embed)\.weight$"
    r"|(^|\.)level_embed$|relative_position_bias_table$"
)

#: Standard deviation of Swin's relative position bias tables: large enough that a wrong
#: relative_position_index visibly changes the attention.
_RELATIVE_POSITION_BIAS_STD = 0.5


def canonical_key(key: str) -> str:
    """Map an alias of a shared official parameter to its canonical state_dict name."""
    for pattern, replacement in _ALIASES:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return key


def _generator(name: str) -> torch.Generator:
    generator = torch.Generator(device="cpu")
    generator.manual_seed(zlib.crc32(name.encode("utf-8")))
    return generator


def official_weight_value(key: str, shape: Sequence[int]) -> torch.Tensor | None:
    """A float32 value for the state_dict entry ``key`` of shape ``shape``, or None to keep it.

    Rules (``g`` is a CPU generator seeded with crc32 of the canonical key):

    * kept as the model's own value (None): integer buffers such as Swin's
      ``relative_position_index`` (the caller skips non-float entries), ``num_batches_tracked``,
      ``criterion.empty_weight``, ``pixel_mean``/``pixel_std``;
    * ``running_mean``: 0.1 * N(0, 1); ``running_var``: 0.5 + U(0, 1) (positive);
    * ``relative_position_bias_table``: 0.5 * N(0, 1);
    * any other tensor with >= 2 dims (conv / linear weights, embeddings, ``level_embed``,
      attention in_proj): N(0, 1) / sqrt(fan_in), fan_in = prod(shape[1:]); then, except for the
      first convolution and for embeddings (label_enc, query_feat, query_embed, level_embed), each
      row (output unit) is centred to sum to zero. Centring stops the positive mean of ReLU
      outputs from building up a component shared by all positions and queries, which otherwise
      makes all 300 queries and all mask logits nearly identical (all masks empty);
    * 1-d ``*.weight`` (only norm scales are 1-d weights): 1 + 0.1 * N(0, 1);
    * other 1-d or 0-d tensors (biases): 0.1 * N(0, 1).
    """
    leaf = key.rsplit(".", 1)[-1]
    if leaf in _KEEP_OWN_VALUE or leaf == "relative_position_index":
        return None
    shape = tuple(int(s) for s in shape)
    generator = _generator(canonical_key(key))
    if leaf == "running_mean":
        return 0.1 * torch.randn(shape, generator=generator)
    if leaf == "running_var":
        return 0.5 + torch.rand(shape, generator=generator)
    if leaf == "relative_position_bias_table":
        return _RELATIVE_POSITION_BIAS_STD * torch.randn(shape, generator=generator)
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        value = torch.randn(shape, generator=generator) / math.sqrt(max(fan_in, 1))
        if not _NOT_CENTRED.search(key):
            value = value - value.flatten(1).mean(1).view(-1, *([1] * (len(shape) - 1)))
        return value
    if leaf == "weight":
        return 1.0 + 0.1 * torch.randn(shape, generator=generator)
    return 0.1 * torch.randn(shape, generator=generator)


def official_state_dict(reference: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Filled values for every float entry of ``reference`` (a state_dict), in its dtypes."""
    filled = {}
    for key, tensor in reference.items():
        if not torch.is_tensor(tensor) or not tensor.is_floating_point():
            continue
        value = official_weight_value(key, tensor.shape)
        if value is not None:
            filled[key] = value.to(tensor.dtype)
    return filled


def fill_official_weights_(model: nn.Module) -> list[str]:
    """Overwrite ``model``'s weights in place with :func:`official_weight_value`.

    Returns the filled keys. Raises if two entries share storage without being known aliases
    (they would receive two different values).
    """
    state = model.state_dict(keep_vars=True)
    owners: dict[tuple[int, tuple[int, ...]], set[str]] = {}
    filled = []
    with torch.no_grad():
        for key, tensor in state.items():
            if not torch.is_tensor(tensor) or not tensor.is_floating_point():
                continue
            value = official_weight_value(key, tensor.shape)
            if value is None:
                continue
            owners.setdefault((tensor.data_ptr(), tuple(tensor.shape)), set()).add(
                canonical_key(key)
            )
            tensor.copy_(value)
            filled.append(key)
    shared = [sorted(keys) for keys in owners.values() if len(keys) > 1]
    if shared:
        raise RuntimeError(
            "these entries share storage but are not known aliases, so they cannot hold their "
            f"own values: {shared[:5]}"
        )
    return sorted(filled)


# --------------------------------------------------------------------------------------------
# Deterministic random draws
# --------------------------------------------------------------------------------------------


# The generators used for replayed draws, captured before any patching.
_RAND, _RANDN, _RANDINT, _RANDPERM = torch.rand, torch.randn, torch.randint, torch.randperm


def _shape_of(size: tuple[Any, ...]) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
        size = tuple(size[0])
    return tuple(int(s) for s in size)


class DeterministicRandomDraws:
    """Context manager: torch's random functions return values fixed by (kind, shape, n).

    Inside the block, ``torch.rand/rand_like/randn/randn_like/randint/randint_like/randperm``
    and ``Tensor.uniform_/normal_`` are replaced. A draw has a *signature*: its kind
    ("uniform" for rand/uniform_, "normal" for randn/normal_, "int" with its [low, high) range,
    "perm" with n) and its shape. The n-th draw of a signature (n counted from 0 inside the block)
    returns ``torch.rand/randn/randint/randperm(..., generator=crc32(signature, n))`` (float32
    values, then cast; uniform_(a, b) and normal_(m, s) apply their affine map), on CPU, then
    moved to the requested device.

    Consequence for a re-implementation replaying an official run: it must make the same draws
    (same kinds and shapes, e.g. one ``rand(1, P, 2)`` per image per matcher call, not one for the
    batch), and the draws of one signature must happen in the same relative order. Draws of
    *different* signatures may interleave differently. ``torch.bernoulli``, ``torch.multinomial``,
    ``torch.normal`` and ``Tensor.random_/bernoulli_/exponential_/geometric_/cauchy_/log_normal_``
    raise, so nothing random can slip through unreplayed.

    ``log`` lists every draw in call order as a dict: ``fn``, ``kind``, ``shape``, ``low``,
    ``high``, ``occurrence``, ``checksum`` (float64 sum of the values before any affine map),
    ``site`` (the calling function, file:function, for diagnostics).
    """

    _TORCH_FUNCS = ("rand", "rand_like", "randn", "randn_like", "randint", "randint_like")
    _TORCH_FUNCS += ("randperm",)
    _FORBIDDEN_TORCH = ("bernoulli", "multinomial", "normal", "poisson")
    _FORBIDDEN_TENSOR = ("random_", "bernoulli_", "exponential_", "geometric_", "cauchy_")
    _FORBIDDEN_TENSOR += ("log_normal_",)

    def __init__(self, salt: str = "maskdino-fidelity") -> None:
        self.salt = salt
        self.log: list[dict[str, Any]] = []
        self._counts: dict[tuple[Any, ...], int] = {}
        self._saved: list[tuple[Any, str, Any]] = []

    # -- value generation ---------------------------------------------------------------------
    def _values(
        self,
        fn: str,
        kind: str,
        shape: tuple[int, ...],
        low: int | None = None,
        high: int | None = None,
    ) -> torch.Tensor:
        signature = (kind, shape, low, high)
        occurrence = self._counts.get(signature, 0)
        self._counts[signature] = occurrence + 1
        generator = _generator(repr((self.salt, kind, shape, low, high, occurrence)))
        if kind == "uniform":
            values = _RAND(shape, generator=generator, dtype=torch.float32)
        elif kind == "normal":
            values = _RANDN(shape, generator=generator, dtype=torch.float32)
        elif kind == "int":
            values = _RANDINT(low, high, shape, generator=generator, dtype=torch.int64)
        elif kind == "perm":
            values = _RANDPERM(high, generator=generator, dtype=torch.int64)
        else:  # pragma: no cover - internal
            raise ValueError(kind)
        frame = sys._getframe(2)
        self.log.append(
            {
                "fn": fn,
                "kind": kind,
                "shape": list(shape),
                "low": low,
                "high": high,
                "occurrence": occurrence,
                "checksum": float(values.double().sum()),
                "site": f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_code.co_name}",
            }
        )
        return values

    @staticmethod
    def _finish(values: torch.Tensor, dtype: Any, device: Any) -> torch.Tensor:
        if dtype is not None:
            values = values.to(dtype)
        if device is not None:
            values = values.to(device)
        return values

    # -- replacements -------------------------------------------------------------------------
    def _rand(self, *size: Any, dtype=None, device=None, generator=None, **kwargs: Any):
        values = self._values("rand", "uniform", _shape_of(size))
        return self._finish(values, dtype or torch.get_default_dtype(), device)

    def _rand_like(self, input: torch.Tensor, *, dtype=None, device=None, **kwargs: Any):
        values = self._values("rand_like", "uniform", tuple(input.shape))
        return self._finish(values, dtype or input.dtype, device or input.device)

    def _randn(self, *size: Any, dtype=None, device=None, generator=None, **kwargs: Any):
        values = self._values("randn", "normal", _shape_of(size))
        return self._finish(values, dtype or torch.get_default_dtype(), device)

    def _randn_like(self, input: torch.Tensor, *, dtype=None, device=None, **kwargs: Any):
        values = self._values("randn_like", "normal", tuple(input.shape))
        return self._finish(values, dtype or input.dtype, device or input.device)

    def _randint(self, *args: Any, dtype=None, device=None, generator=None, **kwargs: Any):
        if "size" in kwargs:
            args = args + (kwargs.pop("size"),)
        if "high" in kwargs:
            args = (kwargs.pop("low", 0), kwargs.pop("high")) + args
        low, high, size = (0, *args) if len(args) == 2 else args
        values = self._values("randint", "int", _shape_of((size,)), int(low), int(high))
        return self._finish(values, dtype or torch.int64, device)

    def _randint_like(self, input: torch.Tensor, *args: Any, dtype=None, device=None, **kw: Any):
        if "high" in kw:
            args = (kw.pop("low", 0), kw.pop("high"))
        low, high = (0, *args) if len(args) == 1 else args
        values = self._values("randint_like", "int", tuple(input.shape), int(low), int(high))
        return self._finish(values, dtype or input.dtype, device or input.device)

    def _randperm(self, n: int, *, dtype=None, device=None, generator=None, **kwargs: Any):
        values = self._values("randperm", "perm", (int(n),), 0, int(n))
        return self._finish(values, dtype or torch.int64, device)

    def _make_uniform_(self) -> Callable[..., torch.Tensor]:
        owner = self

        def uniform_(tensor: torch.Tensor, a: float = 0.0, b: float = 1.0, *, generator=None):
            values = owner._values("Tensor.uniform_", "uniform", tuple(tensor.shape))
            with torch.no_grad():
                tensor.copy_(a + (b - a) * values.to(torch.float64))
            return tensor

        return uniform_

    def _make_normal_(self) -> Callable[..., torch.Tensor]:
        owner = self

        def normal_(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, *, generator=None):
            values = owner._values("Tensor.normal_", "normal", tuple(tensor.shape))
            with torch.no_grad():
                tensor.copy_(mean + std * values.to(torch.float64))
            return tensor

        return normal_

    @staticmethod
    def _forbidden(name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(
                f"{name} was called inside DeterministicRandomDraws; it cannot be replayed. "
                "Draw with torch.rand/randn/randint (or their *_like forms) instead."
            )

        return refuse

    def __enter__(self) -> DeterministicRandomDraws:
        replacements: list[tuple[Any, str, Any]] = [
            (torch, name, getattr(self, "_" + name)) for name in self._TORCH_FUNCS
        ]
        replacements += [(torch.Tensor, "uniform_", self._make_uniform_())]
        replacements += [(torch.Tensor, "normal_", self._make_normal_())]
        replacements += [(torch, n, self._forbidden(f"torch.{n}")) for n in self._FORBIDDEN_TORCH]
        replacements += [
            (torch.Tensor, n, self._forbidden(f"Tensor.{n}")) for n in self._FORBIDDEN_TENSOR
        ]
        for owner, name, replacement in replacements:
            self._saved.append((owner, name, getattr(owner, name)))
            setattr(owner, name, replacement)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()


def signature_counts(log: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many draws of each signature a log holds, keyed by a readable signature string."""
    counts: dict[str, int] = {}
    for entry in log:
        key = describe_draw(entry)
        counts[key] = counts.get(key, 0) + 1
    return counts


def describe_draw(entry: Mapping[str, Any]) -> str:
    """A readable signature such as ``uniform(1, 12544, 2)`` or ``int[0, 80)(13,)``."""
    shape = tuple(entry["shape"])
    if entry["kind"] == "int":
        return f"int[{entry['low']}, {entry['high']}){shape}"
    return f"{entry['kind']}{shape}"


# --------------------------------------------------------------------------------------------
# Designed raw predictions (inputs for the post-processing fidelity check)
# --------------------------------------------------------------------------------------------


def designed_predictions(
    batch_size: int,
    num_queries: int,
    num_classes: int,
    mask_size: tuple[int, int],
    *,
    num_thing_classes: int | None = None,
    with_no_object: bool = False,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Raw decoder outputs with clear, well-separated decisions, for testing post-processing.

    A randomly initialised network produces near-identical queries, so its panoptic output is
    almost always empty. These designed outputs instead contain, per image, 16 "object" queries
    (at random query slots) whose mask logits are discs with soft edges (some overlapping), whose
    class logit is high for one class, with a ladder of scores around the panoptic threshold
    0.25, things and stuff classes, and a repeated stuff class (stuff merging); every other query
    is background (class logits about -6, mask logits about -4).

    Returns ``pred_logits`` [B, Q, C(+1)], ``pred_masks`` [B, Q, h, w] (mask logits at stride 4),
    ``pred_boxes`` [B, Q, 4] (sigmoid cxcywh). With ``with_no_object`` the class axis has an extra
    last "no object" column (softmax/CE models), high for background queries.
    """
    generator = _generator(
        repr(("designed", batch_size, num_queries, num_classes, mask_size, seed))
    )
    h, w = mask_size
    num_columns = num_classes + (1 if with_no_object else 0)
    logits = -6.0 + 0.5 * _RANDN((batch_size, num_queries, num_columns), generator=generator)
    masks = -4.0 + 0.5 * _RANDN((batch_size, num_queries, h, w), generator=generator)
    centers = 0.1 + 0.8 * _RAND((batch_size, num_queries, 2), generator=generator)
    sizes = 0.05 + 0.3 * _RAND((batch_size, num_queries, 2), generator=generator)
    boxes = torch.cat([centers, sizes], -1)
    if with_no_object:
        logits[..., -1] = 4.0
    ys = torch.arange(h, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(w, dtype=torch.float32)[None, :] + 0.5
    score_ladder = (
        5.0,
        4.0,
        3.5,
        3.0,
        2.5,
        2.0,
        1.5,
        1.0,
        0.5,
        0.0,
        -0.5,
        -0.8,
        -1.5,
        -2.0,
        3.2,
        2.2,
    )
    thing = num_thing_classes if num_thing_classes is not None else num_classes
    stuff = num_classes - thing
    for b in range(batch_size):
        slots = _RANDPERM(num_queries, generator=generator)[:16]
        draws = _RAND((16, 3), generator=generator)
        for i, q in enumerate(slots.tolist()):
            cy, cx = draws[i, 0].item() * h, draws[i, 1].item() * w
            radius = (0.08 + 0.14 * draws[i, 2].item()) * min(h, w)
            dist = ((ys - cy) ** 2 + (xs - cx) ** 2).sqrt()
            masks[b, q] = (6.0 * (radius - dist) / max(radius * 0.25, 1.0)).clamp(-8.0, 8.0)
            if stuff > 0 and i % 4 == 3:
                cls = thing + (i // 8) % stuff  # slots 3 and 7 share a stuff class, 11 and 15 too
            else:
                cls = (7 * i + 3 * b) % thing
            logits[b, q, cls] = score_ladder[i]
            if with_no_object:
                logits[b, q, -1] = -2.0
            boxes[b, q] = torch.tensor([cx / w, cy / h, 2 * radius / w, 2 * radius / h])
    return {"pred_logits": logits, "pred_masks": masks, "pred_boxes": boxes.clamp(0.0, 1.0)}
