"""Dataset loaders and explicit registration functions (nothing is registered on import)."""

from .builtin import (
    builtin_dataset_names,
    get_datasets_root,
    is_builtin_dataset,
    register_builtin_datasets,
    register_coco_root,
)
from .builtin_meta import contiguous_id_map, panoptic_metadata
from .coco import convert_to_coco_dict, load_coco_json, register_coco_instances
from .coco_panoptic import (
    load_coco_panoptic_json,
    register_coco_panoptic,
    register_coco_panoptic_with_sem_seg,
)
from .semantic import (
    load_sem_seg,
    register_ade20k_semantic,
    register_cityscapes_semantic,
    register_sem_seg,
)
from .synthetic import load_synthetic_shapes, register_synthetic_shapes

__all__ = [
    "builtin_dataset_names",
    "contiguous_id_map",
    "convert_to_coco_dict",
    "get_datasets_root",
    "is_builtin_dataset",
    "load_coco_json",
    "load_coco_panoptic_json",
    "load_sem_seg",
    "load_synthetic_shapes",
    "panoptic_metadata",
    "register_ade20k_semantic",
    "register_builtin_datasets",
    "register_cityscapes_semantic",
    "register_coco_instances",
    "register_coco_panoptic",
    "register_coco_panoptic_with_sem_seg",
    "register_coco_root",
    "register_sem_seg",
    "register_synthetic_shapes",
]
