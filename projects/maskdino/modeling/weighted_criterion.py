"""detrex's ``WeightedCriterion``: the set criterion with the loss weights given as five numbers.

An empty ``weight_dict`` is built like the official ``from_config`` (``maskdino_weight_dict``
with two-stage ``_interm`` keys, ``_dn`` keys for denoising and ``_{i}`` keys for the
``dec_layers`` auxiliary outputs), and the denoising losses follow ``dn``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from .criterion import SetCriterion
from .weight_dict import maskdino_weight_dict

__all__ = ["WeightedCriterion"]

_DN_LOSSES = {"standard": ["labels", "boxes"], "seg": ["labels", "masks", "boxes"], "no": []}


class WeightedCriterion(SetCriterion):
    """``SetCriterion`` with detrex's constructor.

    Args:
        num_classes, matcher, eos_coef, losses, num_points, oversample_ratio,
            importance_sample_ratio, dn, panoptic_on, semantic_ce_loss: as ``SetCriterion``.
        weight_dict: used as given when not empty; else built from the weights below.
        dn_losses: used with a given ``weight_dict``; else set by ``dn``.
        class_weight, mask_weight, dice_weight, box_weight, giou_weight: base loss weights.
        dec_layers: decoder layers (one auxiliary copy of every weight each).
    """

    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module,
        weight_dict: Mapping[str, float] | None,
        eos_coef: float,
        losses: Sequence[str],
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
        dn: str = "no",
        dn_losses: Sequence[str] = (),
        panoptic_on: bool = False,
        semantic_ce_loss: bool = False,
        class_weight: float = 4.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        box_weight: float = 5.0,
        giou_weight: float = 2.0,
        dec_layers: int = 9,
    ) -> None:
        if not weight_dict:
            weight_dict = maskdino_weight_dict(
                class_weight=class_weight,
                mask_weight=mask_weight,
                dice_weight=dice_weight,
                box_weight=box_weight,
                giou_weight=giou_weight,
                two_stage=True,
                dn=dn,
                dec_layers=dec_layers,
                deep_supervision=True,
            )
            if dn not in _DN_LOSSES:
                raise ValueError(f"dn must be one of {sorted(_DN_LOSSES)}, got {dn!r}")
            dn_losses = _DN_LOSSES[dn]
        super().__init__(
            num_classes=num_classes,
            matcher=matcher,
            weight_dict=dict(weight_dict),
            eos_coef=eos_coef,
            losses=list(losses),
            num_points=num_points,
            oversample_ratio=oversample_ratio,
            importance_sample_ratio=importance_sample_ratio,
            dn=dn,
            dn_losses=list(dn_losses),
            panoptic_on=panoptic_on,
            semantic_ce_loss=semantic_ce_loss,
        )
