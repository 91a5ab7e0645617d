"""Mask DINO: one model for detection, instance, panoptic and semantic segmentation.

`from detrex_projects.maskdino import MaskDINO`; configs live in `projects/maskdino/configs/` and load
with `detrex_ext.config.get_config("maskdino/<name>.py")`.
"""

from .modeling import (
    MaskDINO,
    MaskDINODecoder,
    MaskDINOEncoder,
    MaskDINOHead,
    SetCriterion,
    adapt_checkpoint_state_dict,
    maskdino_weight_dict,
)

__all__ = [
    "MaskDINO",
    "MaskDINODecoder",
    "MaskDINOEncoder",
    "MaskDINOHead",
    "SetCriterion",
    "adapt_checkpoint_state_dict",
    "maskdino_weight_dict",
]
