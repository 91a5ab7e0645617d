"""COCO 2017 panoptic segmentation with large-scale jitter (Mask DINO's `coco_panoptic_lsj`).

Training on `coco_2017_train_panoptic` (80 thing + 53 stuff classes): flip, resize by a random
scale in [0.1, 2.0] of 1024, crop / pad to 1024x1024; one mask per segment, boxes from the masks.
Test on `coco_2017_val_panoptic_with_sem_seg` (shortest edge 800, max 1333), evaluated with PQ,
box / mask AP on the thing classes and mIoU over the 133 classes.
"""

from omegaconf import OmegaConf

from detrex_ext.config import LazyCall as L
from detrex_ext.data import (
    COCOPanopticLSJDatasetMapper,
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detrex_ext.data import transforms as T
from detrex_ext.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train_panoptic"),
    mapper=L(COCOPanopticLSJDatasetMapper)(
        is_train=True,
        image_size=1024,
        min_scale=0.1,
        max_scale=2.0,
        random_flip="horizontal",
        image_format="RGB",
    ),
    total_batch_size=16,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(
        names="coco_2017_val_panoptic_with_sem_seg", filter_empty=False
    ),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)

dataloader.evaluator = L(DatasetEvaluators)(
    evaluators=[
        L(COCOPanopticEvaluator)(dataset_name="${....test.dataset.names}"),
        L(COCOEvaluator)(dataset_name="${....test.dataset.names}"),
        L(SemSegEvaluator)(dataset_name="${....test.dataset.names}"),
    ]
)
