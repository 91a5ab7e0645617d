"""Reusable layers for DETR-family models (deformable attention, embeddings, box ops)."""

from .batch_norm import FrozenBatchNorm2d, LayerNorm2d, get_norm
from .multi_scale_deform_attn import MultiScaleDeformableAttention
from .multi_scale_deform_attn_op import (
    get_msda_backend,
    multi_scale_deformable_attn,
    multi_scale_deformable_attn_pytorch,
    set_msda_backend,
)
from .shape_spec import ShapeSpec
from .wrappers import Conv2d

__all__ = [
    "Conv2d",
    "FrozenBatchNorm2d",
    "LayerNorm2d",
    "MultiScaleDeformableAttention",
    "ShapeSpec",
    "get_msda_backend",
    "get_norm",
    "multi_scale_deformable_attn",
    "multi_scale_deformable_attn_pytorch",
    "set_msda_backend",
]
