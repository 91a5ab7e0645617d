"""Mask DINO modules: meta-architecture, pixel decoder, decoder, criterion, inference."""

from .checkpoint import adapt_checkpoint_state_dict
from .criterion import SetCriterion
from .decoder import MaskDINODecoder
from .head import MaskDINOHead
from .meta_arch import MaskDINO
from .pixel_decoder import MaskDINOEncoder
from .weight_dict import maskdino_weight_dict

__all__ = [
    "MaskDINO",
    "MaskDINODecoder",
    "MaskDINOEncoder",
    "MaskDINOHead",
    "SetCriterion",
    "adapt_checkpoint_state_dict",
    "maskdino_weight_dict",
]
