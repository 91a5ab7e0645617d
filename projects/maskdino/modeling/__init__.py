"""Mask DINO modules: meta-architecture, pixel decoder, decoder, criterion, inference; and the
names detrex's Mask DINO configs import (``WeightedCriterion``, Mask DINO's ``HungarianMatcher``)."""

from .checkpoint import adapt_checkpoint_state_dict
from .criterion import SetCriterion
from .decoder import MaskDINODecoder
from .head import MaskDINOHead
from .matcher import HungarianMatcher
from .meta_arch import MaskDINO
from .pixel_decoder import MaskDINOEncoder
from .weight_dict import maskdino_weight_dict
from .weighted_criterion import WeightedCriterion

__all__ = [
    "HungarianMatcher",
    "MaskDINO",
    "MaskDINODecoder",
    "MaskDINOEncoder",
    "MaskDINOHead",
    "SetCriterion",
    "WeightedCriterion",
    "adapt_checkpoint_state_dict",
    "maskdino_weight_dict",
]
