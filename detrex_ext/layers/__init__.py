"""Reusable layers for DETR-family models (deformable attention, embeddings, box ops)."""

from .batch_norm import FrozenBatchNorm2d, LayerNorm2d, get_norm
from .shape_spec import ShapeSpec
from .wrappers import Conv2d

__all__ = [
    "Conv2d",
    "FrozenBatchNorm2d",
    "LayerNorm2d",
    "ShapeSpec",
    "get_norm",
]
