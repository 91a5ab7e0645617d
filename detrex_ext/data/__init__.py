"""Datasets, catalogs, augmentation, mappers and loaders (detectron2 names)."""

from . import dataset_mappers, samplers, transforms
from .build import (
    build_batch_data_loader,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
    trivial_batch_collator,
)
from .catalog import DatasetCatalog, Metadata, MetadataCatalog, catalog_snapshot
from .common import AspectRatioGroupedDataset, DatasetFromList, MapDataset, ToIterableDataset
from .dataset_mapper import DatasetMapper, build_test_augmentation
from .datasets import (
    register_ade20k_semantic,
    register_builtin_datasets,
    register_cityscapes_semantic,
    register_coco_instances,
    register_coco_panoptic,
    register_coco_panoptic_with_sem_seg,
    register_coco_root,
    register_sem_seg,
    register_synthetic_shapes,
)
from .detection_utils import load_image, load_pan_seg, load_sem_seg, read_image
from .mappers import (
    COCOInstanceLSJDatasetMapper,
    COCOInstanceNewBaselineDatasetMapper,
    COCOPanopticLSJDatasetMapper,
    COCOPanopticNewBaselineDatasetMapper,
    MaskFormerSemanticDatasetMapper,
    build_lsj_augmentation,
    build_semantic_augmentation,
)
from .samplers import (
    GroupedBatchSampler,
    InferenceSampler,
    RepeatFactorTrainingSampler,
    TrainingSampler,
)

__all__ = [
    "AspectRatioGroupedDataset",
    "COCOInstanceLSJDatasetMapper",
    "COCOInstanceNewBaselineDatasetMapper",
    "COCOPanopticLSJDatasetMapper",
    "COCOPanopticNewBaselineDatasetMapper",
    "DatasetCatalog",
    "DatasetFromList",
    "DatasetMapper",
    "GroupedBatchSampler",
    "InferenceSampler",
    "MapDataset",
    "MaskFormerSemanticDatasetMapper",
    "Metadata",
    "MetadataCatalog",
    "RepeatFactorTrainingSampler",
    "ToIterableDataset",
    "TrainingSampler",
    "build_batch_data_loader",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "build_lsj_augmentation",
    "build_semantic_augmentation",
    "build_test_augmentation",
    "catalog_snapshot",
    "get_detection_dataset_dicts",
    "load_image",
    "load_pan_seg",
    "load_sem_seg",
    "read_image",
    "register_ade20k_semantic",
    "register_builtin_datasets",
    "register_cityscapes_semantic",
    "register_coco_instances",
    "register_coco_panoptic",
    "register_coco_panoptic_with_sem_seg",
    "register_coco_root",
    "register_sem_seg",
    "register_synthetic_shapes",
    "dataset_mappers",
    "samplers",
    "transforms",
    "trivial_batch_collator",
]
