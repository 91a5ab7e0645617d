"""COCO 2017 panoptic segmentation with large-scale jitter (Mask DINO's `coco_panoptic_lsj`).

Training on `coco_2017_train_panoptic` (80 thing + 53 stuff classes) with the instance recipe's
augmentation (flip, scale 0.1-2.0 of 1024, crop / pad to 1024), one mask per segment, boxes from
the masks. Test on `coco_2017_val_panoptic_with_sem_seg` (shortest edge 800, max 1333), evaluated
with PQ, box / mask AP on the thing classes and mIoU over the 133 classes.
"""

from detrex_ext.config import LazyCall as L
from detrex_ext.data import COCOPanopticLSJDatasetMapper
from detrex_ext.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)

from .coco_instance_lsj import dataloader

dataloader.train.dataset.names = "coco_2017_train_panoptic"
dataloader.train.mapper._target_ = COCOPanopticLSJDatasetMapper
dataloader.test.dataset.names = "coco_2017_val_panoptic_with_sem_seg"

dataloader.evaluator = L(DatasetEvaluators)(
    evaluators=[
        L(COCOPanopticEvaluator)(dataset_name="${....test.dataset.names}"),
        L(COCOEvaluator)(dataset_name="${....test.dataset.names}"),
        L(SemSegEvaluator)(dataset_name="${....test.dataset.names}"),
    ]
)
