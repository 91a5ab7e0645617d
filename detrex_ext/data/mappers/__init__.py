"""Mappers: dataset dict -> model input dict, for Mask DINO's training recipes."""

from .coco_lsj import (
    COCOInstanceLSJDatasetMapper,
    COCOInstanceNewBaselineDatasetMapper,
    COCOPanopticLSJDatasetMapper,
    COCOPanopticNewBaselineDatasetMapper,
    build_lsj_augmentation,
)
from .semantic import MaskFormerSemanticDatasetMapper, build_semantic_augmentation

__all__ = [
    "COCOInstanceLSJDatasetMapper",
    "COCOInstanceNewBaselineDatasetMapper",
    "COCOPanopticLSJDatasetMapper",
    "COCOPanopticNewBaselineDatasetMapper",
    "MaskFormerSemanticDatasetMapper",
    "build_lsj_augmentation",
    "build_semantic_augmentation",
]
