"""COCO 2017 instance segmentation with large-scale jitter (Mask DINO's `coco_instance_lsj`).

Training: flip, resize by a random scale in [0.1, 2.0] of 1024, crop / pad to 1024x1024 (pad 128);
polygons rasterised to masks, boxes from the masks. Test: shortest edge 800, max 1333.
Evaluation: box and mask AP (COCOEvaluator). Datasets resolve under `$DETREX_DATASETS`.
The test loader and evaluator are the shared ones of `configs/common/data/coco.py`.
"""

from omegaconf import OmegaConf

from detrex_ext.config import LazyCall as L
from detrex_ext.config import get_config
from detrex_ext.data import (
    COCOInstanceLSJDatasetMapper,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train"),
    mapper=L(COCOInstanceLSJDatasetMapper)(
        is_train=True,
        image_size=1024,
        min_scale=0.1,
        max_scale=2.0,
        random_flip="horizontal",
        image_format="RGB",
    ),
    total_batch_size=16,
    num_workers=4,
    # True: images that cannot be read are skipped with a counted warning instead of stopping
    skip_unreadable_images=False,
)

_common_coco = get_config("common/data/coco.py").dataloader
dataloader.test = _common_coco.test
dataloader.evaluator = _common_coco.evaluator
