"""Mask DINO's Hungarian matcher with the official (and detrex's) constructor.

``HungarianMatcher(cost_class, cost_mask, cost_dice, num_points, cost_box, cost_giou,
panoptic_on)`` is ``detrex_ext.modeling.HungarianMatcher`` with the official cost terms in the
official summation order (mask BCE, focal class, dice, L1 box, GIoU). With ``panoptic_on`` the
box costs of stuff targets are replaced by the mean box cost of the thing targets, so stuff
segments are matched by class and mask only (the official / detrex ``panoptic_on`` rule).
"""

from __future__ import annotations

import torch

from detrex_ext.modeling import (
    FocalClassCost,
    GIoUBoxCost,
    L1BoxCost,
    MaskBCECost,
    MaskDiceCost,
    MatchCost,
)
from detrex_ext.modeling import HungarianMatcher as _HungarianMatcher

__all__ = ["HungarianMatcher", "ThingOnlyBoxCost"]


class ThingOnlyBoxCost(MatchCost):
    """A box cost whose columns for stuff targets (label >= ``num_thing_classes``) hold the mean
    of the thing columns of the same output (0 when the image has no thing)."""

    kind = "box"

    def __init__(self, cost: MatchCost, num_thing_classes: int = 80) -> None:
        super().__init__(cost.weight)
        self.cost = cost
        self.num_thing_classes = num_thing_classes

    def __call__(self, pred: dict, target: dict) -> torch.Tensor:
        cost = self.cost(pred, target)  # [..., Q, T]
        is_thing = target["labels"] < self.num_thing_classes
        if is_thing.all():
            return cost
        mean = cost[..., is_thing].mean(dim=(-2, -1), keepdim=True).nan_to_num(0.0)
        return torch.where(is_thing, cost, mean)

    def __repr__(self) -> str:
        return f"ThingOnlyBoxCost({self.cost!r}, num_thing_classes={self.num_thing_classes})"


class HungarianMatcher(_HungarianMatcher):
    """Mask DINO's matcher.

    Args:
        cost_class, cost_mask, cost_dice, cost_box, cost_giou: weights of the focal class, mask
            BCE, dice, L1 box and GIoU costs (0 drops a term).
        num_points: points per mask for the mask costs (12544 in Mask DINO).
        panoptic_on: stuff targets get the mean box cost of the thing targets.
        num_thing_classes: class ids below it are things (80 for COCO panoptic).
    """

    def __init__(
        self,
        cost_class: float = 1.0,
        cost_mask: float = 1.0,
        cost_dice: float = 1.0,
        num_points: int = 0,
        cost_box: float = 0.0,
        cost_giou: float = 0.0,
        panoptic_on: bool = False,
        num_thing_classes: int = 80,
    ) -> None:
        box_costs: list[MatchCost] = [L1BoxCost(cost_box), GIoUBoxCost(cost_giou, eps=1e-6)]
        if panoptic_on:
            box_costs = [ThingOnlyBoxCost(c, num_thing_classes) for c in box_costs]
        super().__init__(
            costs=[
                MaskBCECost(cost_mask),
                FocalClassCost(cost_class, alpha=0.25, gamma=2.0, eps=1e-8),
                MaskDiceCost(cost_dice),
                *box_costs,
            ],
            num_points=num_points,
        )
        self.panoptic_on = panoptic_on
