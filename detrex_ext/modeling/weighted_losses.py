"""detrex's loss modules: ``FocalLoss``, ``CrossEntropyLoss``, ``L1Loss``, ``GIoULoss``.

All share detrex's (mmdet's) reduction rule: an element-wise loss is multiplied by the optional
element ``weight``; then ``reduction="mean"`` divides the sum by ``avg_factor`` when given (else
it takes the mean), ``"sum"`` sums (``avg_factor`` is an error) and ``"none"`` keeps the
elements; the result is scaled by ``loss_weight``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

__all__ = ["CrossEntropyLoss", "FocalLoss", "GIoULoss", "L1Loss", "weight_reduce_loss"]

_REDUCTIONS = ("none", "mean", "sum")


def weight_reduce_loss(
    loss: torch.Tensor,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    avg_factor: float | None = None,
) -> torch.Tensor:
    """Apply element ``weight`` and reduce (see the module docstring)."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if weight is not None:
        if weight.ndim != loss.ndim:
            raise ValueError(f"weight has {weight.ndim} dims, the loss {loss.ndim}")
        loss = loss * weight
    if avg_factor is None:
        if reduction == "mean":
            return loss.mean()
        return loss.sum() if reduction == "sum" else loss
    if reduction == "sum":
        raise ValueError('avg_factor cannot be used with reduction="sum"')
    if reduction == "mean":
        return loss.sum() / (avg_factor + torch.finfo(loss.dtype).eps)
    return loss


def _one_hot_without_background(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[N]`` class ids in ``[0, num_classes]`` (``num_classes`` = background) -> ``[N, C]``."""
    return F.one_hot(labels, num_classes=num_classes + 1)[:, :num_classes]


class FocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al.) over ``[N, C]`` predictions and ``[N]`` class ids.

    Per element: ``alpha_t * (1 - p_t) ** gamma * BCE(p, y)`` with ``y`` the one-hot target
    (id ``C`` is background: all zeros), ``p_t = p y + (1 - p)(1 - y)``,
    ``alpha_t = alpha y + (1 - alpha)(1 - y)`` (no alpha when ``alpha < 0``).

    Args:
        alpha, gamma: focal parameters.
        reduction, loss_weight: see the module docstring.
        activated: predictions are probabilities already (else logits).
    """

    def __init__(
        self,
        alpha: float = 0.25,
        gamma: float = 2.0,
        reduction: str = "mean",
        loss_weight: float = 1.0,
        activated: bool = False,
    ) -> None:
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.activated = activated

    def forward(
        self,
        preds: torch.Tensor,
        targets: torch.Tensor,
        weight: torch.Tensor | None = None,
        avg_factor: float | None = None,
    ) -> torch.Tensor:
        """``preds`` ``[N, C]``, ``targets`` int64 ``[N]`` in ``[0, C]``."""
        onehot = _one_hot_without_background(targets, preds.size(1)).to(preds.dtype)
        preds = preds.float()
        onehot = onehot.float()
        if self.activated:  # probabilities: torchvision's formula, on them instead of logits
            ce = F.binary_cross_entropy(preds, onehot, reduction="none")
            p_t = preds * onehot + (1 - preds) * (1 - onehot)
            loss = ce * (1 - p_t) ** self.gamma
            if self.alpha >= 0:
                loss = (self.alpha * onehot + (1 - self.alpha) * (1 - onehot)) * loss
        else:
            loss = sigmoid_focal_loss(preds, onehot, alpha=self.alpha, gamma=self.gamma)
        return self.loss_weight * weight_reduce_loss(loss, weight, self.reduction, avg_factor)


class CrossEntropyLoss(nn.Module):
    """Softmax cross entropy over ``[N, C]`` logits and ``[N]`` class ids.

    Args:
        reduction, loss_weight: see the module docstring.
        ignore_index: targets with this id give 0 loss (None: -100, PyTorch's default).
        avg_non_ignore: with ``"mean"`` and no ``avg_factor``, average over the non-ignored
            targets only (PyTorch's rule); otherwise over all of them.
    """

    def __init__(
        self,
        reduction: str = "mean",
        loss_weight: float = 1.0,
        ignore_index: int | None = None,
        avg_non_ignore: bool = False,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.ignore_index = ignore_index
        self.avg_non_ignore = avg_non_ignore

    def forward(
        self,
        preds: torch.Tensor,
        targets: torch.Tensor,
        weight: torch.Tensor | None = None,
        avg_factor: float | None = None,
        class_weight: torch.Tensor | None = None,
        ignore_index: int | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """``preds`` ``[N, C]`` logits, ``targets`` int64 ``[N]``; ``class_weight`` ``[C]``."""
        ignore_index = self.ignore_index if ignore_index is None else ignore_index
        ignore_index = -100 if ignore_index is None else ignore_index
        loss = F.cross_entropy(
            preds, targets, weight=class_weight, reduction="none", ignore_index=ignore_index
        )
        if avg_factor is None and self.avg_non_ignore and self.reduction == "mean":
            avg_factor = float((targets != ignore_index).sum())
        if weight is not None:
            weight = weight.float()
        return self.loss_weight * weight_reduce_loss(loss, weight, self.reduction, avg_factor)


class L1Loss(nn.Module):
    """``|preds - targets|`` element-wise (e.g. ``[N, 4]`` boxes); 0 without targets."""

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__()
        self.reduction = reduction
        self.loss_weight = loss_weight

    def forward(
        self,
        preds: torch.Tensor,
        targets: torch.Tensor,
        weight: torch.Tensor | None = None,
        avg_factor: float | None = None,
    ) -> torch.Tensor:
        if targets.numel() == 0:
            return preds.sum() * 0
        if preds.shape != targets.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and targets {tuple(targets.shape)}")
        loss = (preds - targets).abs()
        return self.loss_weight * weight_reduce_loss(loss, weight, self.reduction, avg_factor)


class GIoULoss(nn.Module):
    """``1 - GIoU`` of paired ``[N, 4]`` xyxy boxes; 0 without targets.

    ``GIoU = IoU - (C - U) / C`` with ``IoU = I / (U + eps)`` and the enclosing box area C
    (``+ eps`` in its denominator), as detrex computes it.
    """

    def __init__(self, eps: float = 1e-6, reduction: str = "mean", loss_weight: float = 1.0):
        super().__init__()
        self.eps = eps
        self.reduction = reduction
        self.loss_weight = loss_weight

    def forward(
        self,
        preds: torch.Tensor,
        targets: torch.Tensor,
        weight: torch.Tensor | None = None,
        avg_factor: float | None = None,
    ) -> torch.Tensor:
        if targets.numel() == 0:
            return preds.sum() * 0
        x1, y1, x2, y2 = preds.unbind(dim=-1)
        x1g, y1g, x2g, y2g = targets.unbind(dim=-1)
        if not bool((x2 >= x1).all() and (y2 >= y1).all()):
            raise ValueError("a predicted box has x2 < x1 or y2 < y1 (expected x1, y1, x2, y2)")
        inter_w = (torch.min(x2, x2g) - torch.max(x1, x1g)).clamp(min=0)
        inter_h = (torch.min(y2, y2g) - torch.max(y1, y1g)).clamp(min=0)
        intersection = inter_w * inter_h
        union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intersection
        iou = intersection / (union + self.eps)
        enclosing = (torch.max(x2, x2g) - torch.min(x1, x1g)) * (
            torch.max(y2, y2g) - torch.min(y1, y1g)
        )
        loss = 1 - (iou - (enclosing - union) / (enclosing + self.eps))
        return self.loss_weight * weight_reduce_loss(loss, weight, self.reduction, avg_factor)
