"""Hungarian matching between predictions and ground truth with pluggable, weighted cost terms.

Conventions (DETR / Mask2Former / Mask DINO): ``outputs`` is a dict with ``pred_logits``
``[B, Q, C]``, ``pred_boxes`` ``[B, Q, 4]`` (normalised cxcywh) and/or ``pred_masks``
``[B, Q, h, w]`` (mask logits); ``targets`` is a list of B dicts with ``labels`` ``[T]`` (int64),
``boxes`` ``[T, 4]`` (normalised cxcywh) and/or ``masks`` ``[T, H, W]`` (binary). The result is one
``(query_indices, target_indices)`` pair of int64 CPU tensors per image, sorted by query index.

``HungarianMatcher.match_many`` matches several outputs (final, auxiliary, intermediate) against
the same targets with ONE device-to-host transfer: the cost matrices are computed on the
outputs' device, batched over the outputs and as many images as a step allows (see
``match_blocks``), and copied to the host together for scipy's solver.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .match_blocks import (
    Indices,
    _group_by_layout,
    _num_targets,
    _own_columns,
    _sample_mask_points,
    _sanitize,
    _solve_on_host,
    _stack_block,
)
from .match_costs import (
    FocalClassCost,
    GIoUBoxCost,
    L1BoxCost,
    MaskBCECost,
    MaskDiceCost,
    MatchCost,
    SoftmaxClassCost,
)

__all__ = [
    "FocalClassCost",
    "GIoUBoxCost",
    "HungarianMatcher",
    "L1BoxCost",
    "MaskBCECost",
    "MaskDiceCost",
    "MatchCost",
    "SoftmaxClassCost",
]

_PREDICTION_KEYS = ("pred_logits", "pred_boxes", "pred_masks")

# match_many's default step size on CPU (values per float32 temporary): cache-sized
_CPU_BATCH_POINTS = 1 << 18


def _empty_match() -> tuple[torch.Tensor, torch.Tensor]:
    empty = torch.empty(0, dtype=torch.int64)
    return empty, empty.clone()


class HungarianMatcher(nn.Module):
    """One-to-one matching minimising ``sum_k weight_k * cost_k`` with scipy's solver.

    Args:
        cost_class, cost_bbox, cost_giou, cost_mask, cost_dice: weights of the default terms
            (``FocalClassCost``, ``L1BoxCost``, ``GIoUBoxCost``, ``MaskBCECost``,
            ``MaskDiceCost``); terms with weight 0 are skipped. Ignored when ``costs`` is given.
        focal_alpha, focal_gamma, focal_eps: options of the default ``FocalClassCost``.
        num_points: points drawn uniformly in [0, 1]^2 per image for the mask terms; the SAME
            points are used for every prediction and target of that image.
        costs: explicit list of ``MatchCost`` terms (any weights / custom subclasses).
        max_batch_points: bound of ``outputs x queries x num_points`` in one batched mask-cost
            step of ``match_many`` (each float32 temporary is at most 4x this many bytes); more
            outputs are processed in further steps (always at least one per step). Default
            (None): 2**24 (64 MiB temporaries) on accelerators, where batching saves kernel
            launches; 2**18 (1 MiB, cache-sized) on CPU, where larger steps only add cache
            misses (0.6x the speed at 4 outputs of 300 queries x 12544 points per step) but
            small models gain from fewer, larger operations.

    Mask DINO: ``HungarianMatcher(cost_class=4, cost_bbox=5, cost_giou=2, cost_mask=5,
    cost_dice=5, num_points=12544)``.
    """

    def __init__(
        self,
        cost_class: float = 1.0,
        cost_bbox: float = 1.0,
        cost_giou: float = 1.0,
        cost_mask: float = 0.0,
        cost_dice: float = 0.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        focal_eps: float = 1e-8,
        num_points: int = 12544,
        costs: Sequence[MatchCost] | None = None,
        max_batch_points: int | None = None,
    ) -> None:
        super().__init__()
        if costs is None:
            costs = [
                FocalClassCost(cost_class, focal_alpha, focal_gamma, focal_eps),
                L1BoxCost(cost_bbox),
                GIoUBoxCost(cost_giou),
                MaskBCECost(cost_mask),
                MaskDiceCost(cost_dice),
            ]
        self.costs = [term for term in costs if term.weight != 0]
        if not self.costs:
            raise ValueError("HungarianMatcher needs at least one cost term with a nonzero weight")
        if max_batch_points is not None and max_batch_points < 1:
            raise ValueError(f"max_batch_points must be >= 1, got {max_batch_points}")
        self.num_points = num_points
        self.max_batch_points = max_batch_points

    def _terms(self, cost_kinds: Sequence[str] | None) -> list[MatchCost]:
        terms = [t for t in self.costs if cost_kinds is None or t.kind in cost_kinds]
        if not terms:
            raise ValueError(f"No cost term of kinds {list(cost_kinds)}; have {self.costs}")
        return terms

    def _draw_points(self, device: torch.device, generator) -> torch.Tensor:
        """``[1, P, 2]`` uniform (x, y) points: one draw per (output, image), as the official."""
        return torch.rand(1, self.num_points, 2, device=device, generator=generator)

    def _block_cost(
        self,
        terms: list[MatchCost],
        pred: dict[str, torch.Tensor],
        targets: list[dict[str, torch.Tensor]],
        coords: list[list] | None,
    ) -> torch.Tensor:
        """Costs of L same-layout outputs on S images against the images' targets.

        Every prediction is scored against the targets of all S images (the terms see the
        targets concatenated); each image's own columns are the ones that count.

        Args:
            pred: ``pred_logits [L, S, Q, C]``, ``pred_boxes [L, S, Q, 4]``, ``pred_masks
                [L, S, Q, h, w]`` (the entries the terms need).
            targets: S dicts of ``labels [T_s]``, ``boxes [T_s, 4]``, float ``masks [T_s, H,
                W]`` (likewise).
            coords: ``coords[l][s]``, ``[1, P, 2]`` mask points (None without mask terms).

        Returns:
            ``[L, S, Q, T]`` float32 costs (not sanitised), ``T = sum_s T_s``.
        """
        pred = dict(pred)
        target = {
            key: torch.cat([t[key] for t in targets]) if len(targets) > 1 else targets[0][key]
            for key in ("labels", "boxes")
            if key in targets[0]
        }
        device = next(iter(pred.values())).device
        if any(term.needs_points for term in terms):
            with torch.autocast(device.type, enabled=False):
                pred["mask_points"], target["mask_points"] = _sample_mask_points(
                    pred.pop("pred_masks").float(), targets, coords
                )
        with torch.autocast(device.type, enabled=False):
            cost = sum(term.weight * term(pred, target) for term in terms)
        return cost.float()

    @torch.no_grad()
    def cost_matrix(
        self,
        pred: dict[str, torch.Tensor],
        target: dict[str, torch.Tensor],
        cost_kinds: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The weighted cost of one image.

        Args:
            pred: ``pred_logits [Q, C]``, ``pred_boxes [Q, 4]``, ``pred_masks [Q, h, w]`` (the
                entries the active terms need).
            target: ``labels [T]``, ``boxes [T, 4]``, ``masks [T, H, W]`` (likewise).
            cost_kinds: subset of term kinds to use ("cls", "box", "mask"); default all.
            generator: random generator for the mask points (default: the global one).

        Returns:
            ``[Q, T]`` float32 costs, NaN/inf already sanitised (without a warning).
        """
        terms = self._terms(cost_kinds)
        coords = None
        target = dict(target)
        if any(term.needs_points for term in terms):
            device = pred["pred_masks"].device
            coords = [[self._draw_points(device, generator)]]
            target["masks"] = target["masks"].to(device=device, dtype=torch.float32)
        block = {k: v[None, None] for k, v in pred.items() if k in _PREDICTION_KEYS}
        return _sanitize(self._block_cost(terms, block, [target], coords))[0][0, 0]

    @torch.no_grad()
    def match_many(
        self,
        outputs_list: Sequence[dict[str, torch.Tensor]],
        targets: list[dict[str, torch.Tensor]],
        cost_kinds: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> list[Indices]:
        """Match several outputs (e.g. final, auxiliary, intermediate) against the same targets.

        Equal to ``[self(outputs, targets) for outputs in outputs_list]`` (same random draws in
        the same order: one ``[1, P, 2]`` per output and image with targets), but with a single
        device-to-host transfer: the cost matrices are computed on the outputs' device, outputs
        of the same layout stacked, and as many images per step as the step size allows
        (``[L, S, Q, T]``), then copied to the host together for scipy's solver. Non-finite
        costs are sanitised on the device; each matrix that had some is reported with one
        warning after the transfer.

        Args:
            outputs_list: N dicts of batched predictions (``pred_logits [B, Q, C]`` etc.).
            targets: B dicts of per-image targets.
            cost_kinds: restrict to these term kinds (e.g. ``("cls", "box")``).
            generator: random generator for the mask points.

        Returns:
            N lists of B pairs ``(query_idx [K], target_idx [K])`` int64 on CPU, K = min(Q, T_b).
        """
        terms = self._terms(cost_kinds)
        needs_points = any(term.needs_points for term in terms)
        keys = [self._prediction_keys(outputs, len(targets)) for outputs in outputs_list]
        images = [b for b, target in enumerate(targets) if _num_targets(target) > 0]
        # Draws first, in the order of one call per output: output by output, image by image.
        coords = [
            {b: self._draw_points(outputs[keys[i][0]].device, generator) for b in images}
            if needs_points
            else {}
            for i, outputs in enumerate(outputs_list)
        ]
        device = outputs_list[0][keys[0][0]].device
        targets = [dict(target) for target in targets]
        if needs_points:  # converted once per image, not per output
            for b in images:
                masks = targets[b]["masks"]
                targets[b]["masks"] = masks.to(device=device, dtype=torch.float32)
        blocks = []  # (output ids, images, costs [L, S, Q, T], non-finite counts [L, S])
        for group in _group_by_layout(outputs_list, keys):
            layout = {k: outputs_list[group[0]][k] for k in keys[group[0]]}  # predictions only
            for chunk in self._chunks(group, layout, needs_points):
                for image_set in self._image_sets(chunk, layout, targets, images, needs_points):
                    pred = _stack_block([outputs_list[i] for i in chunk], keys[chunk[0]], image_set)
                    block_targets = [targets[b] for b in image_set]
                    block_coords = None
                    if needs_points:
                        block_coords = [[coords[i][b] for b in image_set] for i in chunk]
                    cost = self._block_cost(terms, pred, block_targets, block_coords)
                    valid = _own_columns(block_targets, cost.device)
                    blocks.append((chunk, image_set, *_sanitize(cost, valid)))
        indices = [[_empty_match() for _ in targets] for _ in outputs_list]
        if blocks:
            _solve_on_host(blocks, indices, targets)
        return indices

    @staticmethod
    def _prediction_keys(outputs: dict[str, torch.Tensor], batch_size: int) -> list[str]:
        keys = [k for k in _PREDICTION_KEYS if k in outputs]
        if not keys:
            raise ValueError(f"no prediction among the output keys {sorted(outputs)}")
        if outputs[keys[0]].shape[0] != batch_size:
            raise ValueError(
                f"{batch_size} targets for a batch of {outputs[keys[0]].shape[0]} predictions"
            )
        return keys

    def _step_limit(self, outputs: dict[str, torch.Tensor]) -> int:
        if self.max_batch_points is not None:
            return self.max_batch_points
        device = next(iter(outputs.values())).device
        return _CPU_BATCH_POINTS if device.type == "cpu" else 1 << 24

    def _chunks(
        self, group: list[int], outputs: dict[str, torch.Tensor], needs_points: bool
    ) -> list[list[int]]:
        """Split a group of output ids so one mask-cost step holds <= max_batch_points values."""
        size = len(group)
        if needs_points and "pred_masks" in outputs:
            per_output = max(outputs["pred_masks"].shape[1] * self.num_points, 1)
            size = max(1, self._step_limit(outputs) // per_output)
        return [group[i : i + size] for i in range(0, len(group), size)]

    def _image_sets(
        self,
        chunk: list[int],
        outputs: dict[str, torch.Tensor],
        targets: list[dict[str, torch.Tensor]],
        images: list[int],
        needs_points: bool,
    ) -> list[list[int]]:
        """Consecutive runs of the images with targets, each as large as the step allows: the
        step's ``[L, S, Q, T]`` costs (and, with mask terms, its ``[L, S, Q, P]`` samples) stay
        within max_batch_points values, T counting the targets of all S images; images whose
        target masks differ in size are not combined."""
        limit = self._step_limit(outputs)
        queries = outputs[next(iter(outputs))].shape[1]
        per_image = len(chunk) * queries * (self.num_points if needs_points else 0)
        sets: list[list[int]] = []
        for b in images:
            if sets:
                current = sets[-1] + [b]
                num_targets = sum(_num_targets(targets[i]) for i in current)
                size = len(chunk) * len(current) * queries * num_targets
                fits = max(size, per_image * len(current)) <= limit
                same = not needs_points or (
                    targets[b]["masks"].shape[1:] == targets[sets[-1][0]]["masks"].shape[1:]
                )
                if fits and same:
                    sets[-1].append(b)
                    continue
            sets.append([b])
        return sets

    @torch.no_grad()
    def forward(
        self,
        outputs: dict[str, torch.Tensor],
        targets: list[dict[str, torch.Tensor]],
        cost_kinds: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> Indices:
        """Match the queries of every image to its targets (``match_many`` of one output).

        Args:
            outputs: batched predictions (``pred_logits [B, Q, C]`` etc.; other keys ignored).
            targets: B dicts of per-image targets.
            cost_kinds: restrict to these term kinds (e.g. ``("cls", "box")``).
            generator: random generator for the mask points.

        Returns:
            B pairs ``(query_idx [K], target_idx [K])`` int64 on CPU, K = min(Q, T_b).
        """
        return self.match_many([outputs], targets, cost_kinds, generator)[0]

    def extra_repr(self) -> str:
        return f"costs={self.costs}, num_points={self.num_points}"
