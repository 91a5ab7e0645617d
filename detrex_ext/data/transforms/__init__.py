"""Augmentations and transforms (detectron2's ``T`` namespace), built on ``fvcore.transforms``."""

from fvcore.transforms.transform import (
    BlendTransform,
    HFlipTransform,
    NoOpTransform,
    PadTransform,
    Transform,
    TransformList,
    VFlipTransform,
)

from .augmentation import (
    AugInput,
    Augmentation,
    AugmentationList,
    apply_augmentations,
    apply_transform_gens,
)
from .augmentation_impl import (
    ColorAugSSD,
    FixedSizeCrop,
    RandomCrop,
    RandomCrop_CategoryAreaConstraint,
    RandomCropWithCategoryAreaLimit,
    RandomFlip,
    Resize,
    ResizeScale,
    ResizeShortestEdge,
)
from .transform import (
    BICUBIC,
    BILINEAR,
    NEAREST,
    ColorAugSSDTransform,
    CropTransform,
    ResizeTransform,
    clip_polygon_to_box,
)

__all__ = [
    "BICUBIC",
    "BILINEAR",
    "NEAREST",
    "AugInput",
    "Augmentation",
    "AugmentationList",
    "BlendTransform",
    "ColorAugSSD",
    "ColorAugSSDTransform",
    "CropTransform",
    "FixedSizeCrop",
    "HFlipTransform",
    "NoOpTransform",
    "PadTransform",
    "RandomCrop",
    "RandomCropWithCategoryAreaLimit",
    "RandomCrop_CategoryAreaConstraint",
    "RandomFlip",
    "Resize",
    "ResizeScale",
    "ResizeShortestEdge",
    "ResizeTransform",
    "Transform",
    "TransformList",
    "VFlipTransform",
    "apply_augmentations",
    "apply_transform_gens",
    "clip_polygon_to_box",
]
