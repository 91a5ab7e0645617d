"""COCO 2017 instance detection/segmentation, detectron2 style (multi-scale resize + flip).

Datasets resolve under ``$DETREX_DATASETS`` (default ``./datasets``). For your own COCO-format
data, register it (``register_coco_instances``) and set ``dataloader.train.dataset.names``,
``dataloader.test.dataset.names``.
"""

from omegaconf import OmegaConf

from detrex_ext.config import LazyCall as L
from detrex_ext.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detrex_ext.data import transforms as T
from detrex_ext.evaluation import COCOEvaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train"),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(
                short_edge_length=(640, 672, 704, 736, 768, 800),
                max_size=1333,
                sample_style="choice",
            ),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="RGB",
        use_instance_mask=True,
    ),
    total_batch_size=16,
    num_workers=4,
    # True: images that cannot be read are skipped with a counted warning instead of stopping
    skip_unreadable_images=False,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)

dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}")
