"""The loss weight dict of Mask DINO, built exactly like the official `from_config` (spec 5.5)."""

from __future__ import annotations

__all__ = ["maskdino_weight_dict"]


def maskdino_weight_dict(
    *,
    class_weight: float = 4.0,
    mask_weight: float = 5.0,
    dice_weight: float = 5.0,
    box_weight: float = 5.0,
    giou_weight: float = 2.0,
    two_stage: bool = True,
    dn: str = "seg",
    dec_layers: int = 9,
    deep_supervision: bool = True,
) -> dict[str, float]:
    """Loss name -> weight.

    Steps: the five base losses; `_interm` copies when two-stage; `_dn` copies of every key so
    far ("standard" DN skips the mask keys); then `_{i}` copies of every key so far for each of
    the `dec_layers` auxiliary predictions. The reference config gives 200 keys. Some keys (e.g.
    `loss_ce_interm_dn`) are never produced; produced losses without a weight are dropped.
    """
    weights = {
        "loss_ce": class_weight,
        "loss_mask": mask_weight,
        "loss_dice": dice_weight,
        "loss_bbox": box_weight,
        "loss_giou": giou_weight,
    }
    if two_stage:
        weights.update({f"{k}_interm": v for k, v in list(weights.items())})
    if dn == "seg":
        weights.update({f"{k}_dn": v for k, v in list(weights.items())})
    elif dn == "standard":
        weights.update(
            {f"{k}_dn": v for k, v in list(weights.items()) if k not in ("loss_mask", "loss_dice")}
        )
    if deep_supervision:
        base = list(weights.items())
        for i in range(dec_layers):
            weights.update({f"{k}_{i}": v for k, v in base})
    return weights
