"""Hungarian matching between predictions and ground truth with pluggable, weighted cost terms.

Conventions (DETR / Mask2Former / Mask DINO): ``outputs`` is a dict with ``pred_logits``
``[B, Q, C]``, ``pred_boxes`` ``[B, Q, 4]`` (normalised cxcywh) and/or ``pred_masks``
``[B, Q, h, w]`` (mask logits); ``targets`` is a list of B dicts with ``labels`` ``[T]`` (int64),
``boxes`` ``[T, 4]`` (normalised cxcywh) and/or ``masks`` ``[T, H, W]`` (binary). The result is one
``(query_indices, target_indices)`` pair of int64 CPU tensors per image, sorted by query index.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from detrex_ext.layers import box_cxcywh_to_xyxy, generalized_box_iou, point_sample

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


class MatchCost:
    """A weighted cost term: ``weight * cost(prediction, target)`` as a ``[Q, T]`` matrix.

    ``kind`` groups terms ("cls", "box", "mask") so one call can use a subset (e.g. no mask
    cost for box-only intermediate outputs). Terms with ``needs_points`` read the mask logits and
    target masks sampled at the matcher's shared random points (``mask_points``).
    """

    kind = ""
    needs_points = False

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = weight

    def __call__(self, pred: dict, target: dict) -> torch.Tensor:
        """``pred``: one image's outputs (``[Q, ...]``); ``target``: its targets -> ``[Q, T]``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weight={self.weight})"


class FocalClassCost(MatchCost):
    """Focal-loss class cost: ``pos[q, label_t] - neg[q, label_t]`` with ``p = sigmoid(logit)``.

    ``pos = alpha * (1 - p)**gamma * -log(p + eps)``,
    ``neg = (1 - alpha) * p**gamma * -log(1 - p + eps)``. Deformable DETR / Mask DINO use
    ``eps=1e-8``; detrex uses 1e-5 in some matchers.
    """

    kind = "cls"

    def __init__(
        self, weight: float = 1.0, alpha: float = 0.25, gamma: float = 2.0, eps: float = 1e-8
    ) -> None:
        super().__init__(weight)
        self.alpha, self.gamma, self.eps = alpha, gamma, eps

    def __call__(self, pred: dict, target: dict) -> torch.Tensor:
        prob = pred["pred_logits"].float().sigmoid()
        neg = (1 - self.alpha) * prob**self.gamma * -(1 - prob + self.eps).log()
        pos = self.alpha * (1 - prob) ** self.gamma * -(prob + self.eps).log()
        labels = target["labels"]
        return pos[:, labels] - neg[:, labels]


class SoftmaxClassCost(MatchCost):
    """DETR's class cost ``-softmax(logits)[q, label_t]`` (logits include "no object")."""

    kind = "cls"

    def __call__(self, pred: dict, target: dict) -> torch.Tensor:
        return -pred["pred_logits"].float().softmax(-1)[:, target["labels"]]


class L1BoxCost(MatchCost):
    """L1 distance between normalised cxcywh boxes: ``sum_i |pred_i - gt_i|``."""

    kind = "box"

    def __call__(self, pred: dict, target: dict) -> torch.Tensor:
        return torch.cdist(pred["pred_boxes"].float(), target["boxes"].float(), p=1)


class GIoUBoxCost(MatchCost):
    """Negative generalized IoU of cxcywh boxes (in [-1, 1]); ``eps`` as in
    ``generalized_box_iou`` (Mask DINO / DINO: 1e-6)."""

    kind = "box"

    def __init__(self, weight: float = 1.0, eps: float = 0.0) -> None:
        super().__init__(weight)
        self.eps = eps

    def __call__(self, pred: dict, target: dict) -> torch.Tensor:
        return -generalized_box_iou(
            box_cxcywh_to_xyxy(pred["pred_boxes"].float()),
            box_cxcywh_to_xyxy(target["boxes"].float()),
            eps=self.eps,
        )


class MaskBCECost(MatchCost):
    """Mean over the shared points of sigmoid BCE between a mask logit and a target mask value."""

    kind = "mask"
    needs_points = True

    def __call__(self, pred: dict, target: dict) -> torch.Tensor:
        logits, labels = pred["mask_points"], target["mask_points"]  # [Q, N], [T, N]
        pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
        neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
        cost = pos @ labels.T + neg @ (1 - labels).T
        return cost / logits.shape[1]


class MaskDiceCost(MatchCost):
    """Dice cost on the shared points: ``1 - (2 sum(s t) + 1) / (sum(s) + sum(t) + 1)``, s = sigmoid."""

    kind = "mask"
    needs_points = True

    def __call__(self, pred: dict, target: dict) -> torch.Tensor:
        probs, labels = pred["mask_points"].sigmoid(), target["mask_points"]
        numerator = 2 * probs @ labels.T
        denominator = probs.sum(-1)[:, None] + labels.sum(-1)[None, :]
        return 1 - (numerator + 1) / (denominator + 1)


def _sanitize(cost: torch.Tensor) -> torch.Tensor:
    """Replace NaN / +inf by a cost above every finite one and -inf by one below, with a warning."""
    finite = torch.isfinite(cost)
    if finite.all():
        return cost
    values = cost[finite]
    high = values.max().item() if values.numel() else 0.0
    low = values.min().item() if values.numel() else 0.0
    span = high - low + 1.0
    warnings.warn(
        f"HungarianMatcher: the cost matrix has {int((~finite).sum())} NaN/inf entries (check the "
        "predicted boxes / logits for NaN or degenerate boxes); they are replaced by costs beyond "
        "the finite range so matching can proceed.",
        RuntimeWarning,
        stacklevel=3,
    )
    return torch.nan_to_num(cost, nan=high + span, posinf=high + span, neginf=low - span)


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
        self.num_points = num_points

    def _sample_mask_points(self, pred: dict, target: dict, generator) -> None:
        logits, masks = pred["pred_masks"], target["masks"]
        coords = torch.rand(1, self.num_points, 2, device=logits.device, generator=generator)
        with torch.autocast(logits.device.type, enabled=False):
            pred["mask_points"] = point_sample(
                logits[:, None].float(), coords.expand(logits.shape[0], -1, -1)
            ).squeeze(1)
            target["mask_points"] = point_sample(
                masks[:, None].to(device=logits.device, dtype=torch.float32),
                coords.expand(masks.shape[0], -1, -1),
            ).squeeze(1)

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
            ``[Q, T]`` float32 costs, NaN/inf already sanitised.
        """
        terms = [t for t in self.costs if cost_kinds is None or t.kind in cost_kinds]
        if not terms:
            raise ValueError(f"No cost term of kinds {list(cost_kinds)}; have {self.costs}")
        pred, target = dict(pred), dict(target)
        if any(term.needs_points for term in terms):
            self._sample_mask_points(pred, target, generator)
        with torch.autocast(next(iter(pred.values())).device.type, enabled=False):
            cost = sum(term.weight * term(pred, target) for term in terms)
        return _sanitize(cost.float())

    @torch.no_grad()
    def forward(
        self,
        outputs: dict[str, torch.Tensor],
        targets: list[dict[str, torch.Tensor]],
        cost_kinds: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> Indices:
        """Match the queries of every image to its targets.

        Args:
            outputs: batched predictions (``pred_logits [B, Q, C]`` etc.; other keys ignored).
            targets: B dicts of per-image targets.
            cost_kinds: restrict to these term kinds (e.g. ``("cls", "box")``).
            generator: random generator for the mask points.

        Returns:
            B pairs ``(query_idx [K], target_idx [K])`` int64 on CPU, K = min(Q, T_b).
        """
        keys = [k for k in ("pred_logits", "pred_boxes", "pred_masks") if k in outputs]
        batch_size = outputs[keys[0]].shape[0]
        if len(targets) != batch_size:
            raise ValueError(f"{len(targets)} targets for a batch of {batch_size} predictions")
        indices = []
        for b, target in enumerate(targets):
            num_targets = len(target["labels"]) if "labels" in target else len(target["boxes"])
            if num_targets == 0:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            pred = {k: outputs[k][b] for k in keys}
            cost = self.cost_matrix(pred, target, cost_kinds, generator)
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices

    def extra_repr(self) -> str:
        return f"costs={self.costs}, num_points={self.num_points}"
