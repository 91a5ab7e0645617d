"""Reusable layers for DETR-family models (deformable attention, embeddings, box ops)."""

from .attention import MultiheadAttention
from .batch_norm import FrozenBatchNorm2d, LayerNorm2d, get_norm
from .box_ops import (
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    generalized_box_iou,
    inverse_sigmoid,
    masks_to_boxes,
    paired_generalized_box_iou,
)
from .denoising import DenoisingQueries, DenoisingQueryGenerator, denoising_attention_mask
from .losses import ciou_loss, diou_loss
from .mlp import FFN, MLP
from .multi_scale_deform_attn import MultiScaleDeformableAttention
from .multi_scale_deform_attn_op import (
    get_msda_backend,
    multi_scale_deformable_attn,
    multi_scale_deformable_attn_pytorch,
    set_msda_backend,
)
from .point_features import (
    calculate_uncertainty,
    draw_point_candidates,
    get_uncertain_point_coords_with_randomness,
    point_sample,
    select_uncertain_points,
)
from .position_embedding import (
    PositionEmbeddingLearned,
    PositionEmbeddingSine,
    box_sine_embedding,
    get_sine_pos_embed,
)
from .shape_spec import ShapeSpec
from .transformer import BaseTransformerLayer, TransformerLayerSequence
from .wrappers import Conv2d

__all__ = [
    "FFN",
    "MLP",
    "BaseTransformerLayer",
    "Conv2d",
    "DenoisingQueries",
    "DenoisingQueryGenerator",
    "FrozenBatchNorm2d",
    "LayerNorm2d",
    "MultiScaleDeformableAttention",
    "MultiheadAttention",
    "PositionEmbeddingLearned",
    "PositionEmbeddingSine",
    "ShapeSpec",
    "TransformerLayerSequence",
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_sine_embedding",
    "box_xyxy_to_cxcywh",
    "calculate_uncertainty",
    "ciou_loss",
    "denoising_attention_mask",
    "diou_loss",
    "generalized_box_iou",
    "get_sine_pos_embed",
    "draw_point_candidates",
    "get_uncertain_point_coords_with_randomness",
    "select_uncertain_points",
    "inverse_sigmoid",
    "masks_to_boxes",
    "paired_generalized_box_iou",
    "point_sample",
    "get_msda_backend",
    "get_norm",
    "multi_scale_deformable_attn",
    "multi_scale_deformable_attn_pytorch",
    "set_msda_backend",
]
