"""ADE20K-150 semantic segmentation (Mask2Former / Mask DINO `mask_former_semantic` recipe).

Training: shortest edge chosen from 256..1024 (max 2048), 512x512 crop with a category-area
limit of 1.0, SSD colour jitter, flip, pad to 512 (image 128, label 255); one target per class
present. Test: shortest edge 512, max 2048. Evaluation: mIoU (SemSegEvaluator).
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
    dataset=L(get_detection_dataset_dicts)(names="ade20k_sem_seg_train"),
    mapper=L(MaskFormerSemanticDatasetMapper)(
        is_train=True,
        image_format="RGB",
        ignore_label=255,
        size_divisibility=512,
        min_size_train=[int(x * 0.1 * 512) for x in range(5, 21)],
        max_size_train=2048,
        crop_size=512,
        single_category_max_area=1.0,
        color_aug_ssd=True,
        random_flip="horizontal",
    ),
    total_batch_size=16,
    num_workers=4,
    # True: images that cannot be read are skipped with a counted warning instead of stopping
    skip_unreadable_images=False,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="ade20k_sem_seg_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=512, max_size=2048)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)

dataloader.evaluator = L(SemSegEvaluator)(dataset_name="${..test.dataset.names}")
