"""Hungarian matching between predictions and ground truth with pluggable, weighted cost terms.

Conventions (DETR / Mask2Former / Mask DINO): ``outputs`` is a dict with ``pred_logits``
``[B, Q, C]``, ``pred_boxes`` ``[B, Q, 4]`` (normalised cxcywh) and/or ``pred_masks``
``[B, Q, h, w]`` (mask logits); ``targets`` is a list of B dicts with ``labels`` ``[T]`` (int64),
``boxes`` ``[T, 4]`` (normalised cxcywh) and/or ``masks`` ``[T, H, W]`` (binary). The result is one
``(query_indices, target_indices)`` pair of int64 CPU tensors per image, sorted by query index.

``HungarianMatcher.match_many`` matches several outputs (final, auxiliary, intermediate) against
the same targets with ONE device-to-host transfer: the cost matrices are computed on the
outputs' device, batched over the outputs, and copied to the host together for scipy's solver.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

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

Indices = list[tuple[torch.Tensor, torch.Tensor]]

# match_many's default step size on CPU (values per float32 temporary): cache-sized
_CPU_BATCH_POINTS = 1 << 18


_NONFINITE_WARNING = (
    "HungarianMatcher: the cost matrix has {} NaN/inf entries (check the "
    "predicted boxes / logits for NaN or degenerate boxes); they are replaced by costs beyond "
    "the finite range so matching can proceed."
)


def _sanitize(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace NaN / +inf by a cost above every finite one and -inf by one below, per matrix.

    Runs on the costs' device without reading any value back (no host synchronisation). With
    ``high`` / ``low`` the largest / smallest finite cost of a matrix (0 when it has none) and
    ``span = high - low + 1``, NaN and +inf become ``high + span`` and -inf ``low - span``,
    computed in float64 and rounded to the costs' dtype (the values of the former host formula).

    Args:
        cost: ``[..., Q, T]`` costs.

    Returns:
        The sanitised ``[..., Q, T]`` costs and ``[...]`` int64 counts of non-finite entries.
    """
    finite = torch.isfinite(cost)
    num_bad = (~finite).sum((-2, -1))
    if cost.numel() == 0:
        return cost, num_bad
    some_finite = (num_bad < cost.shape[-2] * cost.shape[-1])[..., None, None]
    high = torch.where(finite, cost, float("-inf")).amax((-2, -1), keepdim=True).double()
    low = torch.where(finite, cost, float("inf")).amin((-2, -1), keepdim=True).double()
    high = torch.where(some_finite, high, 0.0)
    low = torch.where(some_finite, low, 0.0)
    span = high - low + 1.0
    above, below = (high + span).to(cost.dtype), (low - span).to(cost.dtype)
    cost = torch.where(torch.isnan(cost) | (cost == float("inf")), above, cost)
    return torch.where(cost == float("-inf"), below, cost), num_bad


def _sample_points(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of N maps at one shared point set (``point_sample`` semantics).

    The [-1, 1] grid is computed once and expanded over the maps, which gives the same values as
    ``point_sample(maps[:, None], coords.expand(N, -1, -1))`` without an ``[N, P, 2]`` grid.

    Args:
        maps: ``[N, H, W]`` float maps.
        coords: ``[1, P, 2]`` (x, y) points in [0, 1]^2.

    Returns:
        ``[N, P]`` samples.
    """
    grid = (2.0 * coords - 1.0).unsqueeze(2).expand(maps.shape[0], -1, -1, -1)  # [N, P, 1, 2]
    return F.grid_sample(maps[:, None], grid, align_corners=False)[:, 0, :, 0]


def _num_targets(target: dict[str, torch.Tensor]) -> int:
    return len(target["labels"]) if "labels" in target else len(target["boxes"])


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

    def _stacked_cost(
        self,
        terms: list[MatchCost],
        preds: list[dict[str, torch.Tensor]],
        target: dict[str, torch.Tensor],
        coords: list[torch.Tensor | None],
    ) -> torch.Tensor:
        """Costs of L same-layout predictions of one image against its targets.

        Args:
            preds: L dicts of ``pred_logits [Q, C]``, ``pred_boxes [Q, 4]``, ``pred_masks
                [Q, h, w]`` (the entries the terms need).
            target: ``labels [T]``, ``boxes [T, 4]``, ``masks [T, H, W]`` (likewise).
            coords: per prediction its ``[1, P, 2]`` mask points (None without mask terms).

        Returns:
            ``[L, Q, T]`` float32 costs (not sanitised).
        """
        device = next(iter(preds[0].values())).device
        pred = {k: torch.stack([p[k] for p in preds]) for k in preds[0] if k != "pred_masks"}
        target = dict(target)
        if any(term.needs_points for term in terms):
            with torch.autocast(device.type, enabled=False):
                masks = target["masks"].to(device=device, dtype=torch.float32)
                pred["mask_points"] = torch.stack(
                    [_sample_points(p["pred_masks"].float(), c) for p, c in zip(preds, coords)]
                )  # [L, Q, P]
                target["mask_points"] = torch.stack(
                    [_sample_points(masks, c) for c in coords]
                )  # [L, T, P]
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
        if any(term.needs_points for term in terms):
            coords = self._draw_points(pred["pred_masks"].device, generator)
        return _sanitize(self._stacked_cost(terms, [pred], target, [coords]))[0][0]

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
        of the same layout stacked (``[L, Q, T]`` per image), then copied to the host together
        for scipy's solver. Non-finite costs are sanitised on the device; each matrix that had
        some is reported with one warning after the transfer.

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
        groups = _group_by_layout(outputs_list, keys)
        blocks = []  # (output ids, image, costs [L, Q, T], non-finite counts [L]) on the device
        for b in images:
            target = dict(targets[b])
            if needs_points:  # converted once per image, not per output
                device = outputs_list[0][keys[0][0]].device
                target["masks"] = target["masks"].to(device=device, dtype=torch.float32)
            for group in groups:
                for chunk in self._chunks(group, outputs_list[group[0]], needs_points):
                    preds = [{k: outputs_list[i][k][b] for k in keys[i]} for i in chunk]
                    cost = self._stacked_cost(
                        terms, preds, target, [coords[i].get(b) for i in chunk]
                    )
                    blocks.append((chunk, b, *_sanitize(cost)))
        indices = [[_empty_match() for _ in targets] for _ in outputs_list]
        if blocks:
            _solve_on_host(blocks, indices)
        return indices

    @staticmethod
    def _prediction_keys(outputs: dict[str, torch.Tensor], batch_size: int) -> list[str]:
        keys = [k for k in ("pred_logits", "pred_boxes", "pred_masks") if k in outputs]
        if not keys:
            raise ValueError(f"no prediction among the output keys {sorted(outputs)}")
        if outputs[keys[0]].shape[0] != batch_size:
            raise ValueError(
                f"{batch_size} targets for a batch of {outputs[keys[0]].shape[0]} predictions"
            )
        return keys

    def _chunks(
        self, group: list[int], outputs: dict[str, torch.Tensor], needs_points: bool
    ) -> list[list[int]]:
        """Split a group of output ids so one mask-cost step holds <= max_batch_points values."""
        size = len(group)
        if needs_points and "pred_masks" in outputs:
            masks = outputs["pred_masks"]
            per_output = max(masks.shape[1] * self.num_points, 1)
            limit = self.max_batch_points
            if limit is None:
                limit = _CPU_BATCH_POINTS if masks.device.type == "cpu" else 1 << 24
            size = max(1, limit // per_output)
        return [group[i : i + size] for i in range(0, len(group), size)]

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


def _solve_on_host(
    blocks: list[tuple[list[int], int, torch.Tensor, torch.Tensor]], indices: list[Indices]
) -> None:
    """Copy every cost matrix to the host in ONE transfer, warn about non-finite costs, solve.

    Args:
        blocks: ``(output ids [L], image b, costs [L, Q, T], non-finite counts [L])`` on the
            device; matrix l of a block belongs to output ``ids[l]`` and image ``b``.
        indices: per output, per image ``(query_idx, target_idx)``; filled in place.
    """
    flat = [cost.reshape(-1) for _, _, cost, _ in blocks]
    flat += [num_bad.to(cost.dtype) for _, _, cost, num_bad in blocks]
    host = torch.cat(flat).cpu().numpy()  # the one device-to-host transfer (CUDA: one sync)
    offset, bad_offset, bad_counts = 0, sum(cost.numel() for _, _, cost, _ in blocks), {}
    for ids, b, cost, _ in blocks:
        size = cost.shape[1] * cost.shape[2]
        for i in ids:
            rows, cols = linear_sum_assignment(host[offset : offset + size].reshape(cost.shape[1:]))
            indices[i][b] = (
                torch.as_tensor(rows, dtype=torch.int64),
                torch.as_tensor(cols, dtype=torch.int64),
            )
            bad_counts[i, b] = int(host[bad_offset])
            offset, bad_offset = offset + size, bad_offset + 1
    for key in sorted(bad_counts):  # one warning per matrix with NaN/inf, output by output
        if bad_counts[key]:
            warnings.warn(_NONFINITE_WARNING.format(bad_counts[key]), RuntimeWarning, stacklevel=4)


def _group_by_layout(
    outputs_list: Sequence[dict[str, torch.Tensor]], keys: list[list[str]]
) -> list[list[int]]:
    """Ids of the outputs whose predictions can be stacked (same keys, shapes, dtypes, devices),
    grouped in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, outputs in enumerate(outputs_list):
        layout = tuple(
            (k, tuple(outputs[k].shape), outputs[k].dtype, outputs[k].device) for k in keys[i]
        )
        groups.setdefault(layout, []).append(i)
    return list(groups.values())
