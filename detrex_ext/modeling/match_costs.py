"""Weighted cost terms of the Hungarian matcher (``HungarianMatcher(costs=[...])``).

Each term maps predictions and targets to a ``[..., Q, T]`` cost matrix; see ``MatchCost`` for the
batching contract the matcher relies on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from detrex_ext.layers import box_cxcywh_to_xyxy, generalized_box_iou

__all__ = [
    "FocalClassCost",
    "GIoUBoxCost",
    "L1BoxCost",
    "MaskBCECost",
    "MaskDiceCost",
    "MatchCost",
    "SoftmaxClassCost",
]


class MatchCost:
    """A weighted cost term: ``weight * cost(prediction, target)`` as a ``[..., Q, T]`` matrix.

    ``kind`` groups terms ("cls", "box", "mask") so one call can use a subset (e.g. no mask
    cost for box-only intermediate outputs). Terms with ``needs_points`` read the mask logits and
    target masks sampled at the matcher's shared random points (``mask_points``).

    Batching contract: prediction entries may carry leading batch dims (``[L, S, Q, ...]``:
    several outputs on several images), target entries are the images' targets concatenated
    (``[T, ...]``, T summed over the images) except ``mask_points`` (``[L, S, T, N]``, one point
    set per output and image). Row ``q`` of the cost must depend only on prediction ``q`` and
    column ``t`` only on target ``t``, so each image's own columns equal its matrix alone.
    """

    kind = ""
    needs_points = False

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = weight

    def __call__(self, pred: dict, target: dict) -> torch.Tensor:
        """``pred``: one image's outputs (``[..., Q, ...]``); ``target``: its targets
        -> ``[..., Q, T]``."""
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
        return pos[..., labels] - neg[..., labels]


class SoftmaxClassCost(MatchCost):
    """DETR's class cost ``-softmax(logits)[q, label_t]`` (logits include "no object")."""

    kind = "cls"

    def __call__(self, pred: dict, target: dict) -> torch.Tensor:
        return -pred["pred_logits"].float().softmax(-1)[..., target["labels"]]


class L1BoxCost(MatchCost):
    """L1 distance between normalised cxcywh boxes: ``sum_i |pred_i - gt_i|``."""

    kind = "box"

    def __call__(self, pred: dict, target: dict) -> torch.Tensor:
        boxes = pred["pred_boxes"].float()
        cost = torch.cdist(boxes.reshape(-1, 4), target["boxes"].float(), p=1)
        return cost.reshape(*boxes.shape[:-1], cost.shape[-1])


class GIoUBoxCost(MatchCost):
    """Negative generalized IoU of cxcywh boxes (in [-1, 1]); ``eps`` as in
    ``generalized_box_iou`` (Mask DINO / DINO: 1e-6)."""

    kind = "box"

    def __init__(self, weight: float = 1.0, eps: float = 0.0) -> None:
        super().__init__(weight)
        self.eps = eps

    def __call__(self, pred: dict, target: dict) -> torch.Tensor:
        boxes = pred["pred_boxes"].float()
        giou = generalized_box_iou(
            box_cxcywh_to_xyxy(boxes.reshape(-1, 4)),
            box_cxcywh_to_xyxy(target["boxes"].float()),
            eps=self.eps,
        )
        return -giou.reshape(*boxes.shape[:-1], giou.shape[-1])


class MaskBCECost(MatchCost):
    """Mean over the shared points of sigmoid BCE between a mask logit and a target mask value.

    ``BCE(x, y) = y softplus(-x) + (1 - y) softplus(x) = softplus(x) - x y`` (as
    ``softplus(x) - softplus(-x) = x``), so the ``[Q, T]`` cost is one softplus row sum minus one
    matrix product: the official form's two BCE maps and two products, in half the passes.
    """

    kind = "mask"
    needs_points = True

    def __call__(self, pred: dict, target: dict) -> torch.Tensor:
        logits, labels = pred["mask_points"], target["mask_points"]  # [..., Q, N], [..., T, N]
        softplus_sum = F.softplus(logits).sum(-1, keepdim=True)  # [..., Q, 1]
        cost = softplus_sum - logits @ labels.transpose(-1, -2)
        return cost / logits.shape[-1]


class MaskDiceCost(MatchCost):
    """Dice cost on the shared points: ``1 - (2 sum(s t) + 1) / (sum(s) + sum(t) + 1)``, s = sigmoid."""

    kind = "mask"
    needs_points = True

    def __call__(self, pred: dict, target: dict) -> torch.Tensor:
        probs, labels = pred["mask_points"].sigmoid(), target["mask_points"]
        numerator = 2 * probs @ labels.transpose(-1, -2)
        denominator = probs.sum(-1)[..., :, None] + labels.sum(-1)[..., None, :]
        return 1 - (numerator + 1) / (denominator + 1)
