"""Cityscapes semantic segmentation on the 19 train ids (Mask DINO / Mask2Former recipe).

Training: shortest edge chosen from 512..2048 (max 4096), 512x1024 crop with a category-area
limit of 1.0, SSD colour jitter, flip, no padding in the mapper. Test: shortest edge 1024, max
2048. Evaluation: mIoU (SemSegEvaluator).
"""

from omegaconf import OmegaConf

from detrex_ext.config import LazyCall as L
from detrex_ext.data import (
    DatasetMapper,
    MaskFormerSemanticDatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detrex_ext.data import transforms as T
from detrex_ext.evaluation import SemSegEvaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="cityscapes_fine_sem_seg_train"),
    mapper=L(MaskFormerSemanticDatasetMapper)(
        is_train=True,
        image_format="RGB",
        ignore_label=255,
        size_divisibility=0,
        min_size_train=[int(x * 0.1 * 1024) for x in range(5, 21)],
        max_size_train=4096,
        crop_size=[512, 1024],
        single_category_max_area=1.0,
        color_aug_ssd=True,
        random_flip="horizontal",
    ),
    total_batch_size=16,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="cityscapes_fine_sem_seg_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=1024, max_size=2048)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)

dataloader.evaluator = L(SemSegEvaluator)(dataset_name="${..test.dataset.names}")
