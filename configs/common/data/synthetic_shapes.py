"""The built-in synthetic shapes dataset for panoptic training (no files, CPU friendly).

``synthetic_shapes_train`` (512 images) / ``synthetic_shapes_val`` (64 images) of 128x128:
3 thing classes (circle, square, triangle) and 2 stuff classes (sky, ground); contiguous ids
0..4 with ``thing_classes`` the first 3. Training uses the COCO panoptic LSJ mapper at the
dataset's size; evaluation reports PQ, box/mask AP and mIoU. Other sizes or counts: register
your own split with ``register_synthetic_shapes(name, num_images, image_size, seed=...)`` and
set the dataset names here.
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
    dataset=L(get_detection_dataset_dicts)(names="synthetic_shapes_train"),
    mapper=L(COCOPanopticLSJDatasetMapper)(
        is_train=True,
        image_size=128,
        min_scale=0.5,
        max_scale=1.5,
        random_flip="horizontal",
        image_format="RGB",
    ),
    total_batch_size=8,
    num_workers=0,
    seed=0,
    # True: images that cannot be read are skipped with a counted warning instead of stopping
    skip_unreadable_images=False,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synthetic_shapes_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=128, max_size=1333)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=0,
)

dataloader.evaluator = L(DatasetEvaluators)(
    evaluators=[
        L(COCOPanopticEvaluator)(dataset_name="${....test.dataset.names}"),
        L(COCOEvaluator)(dataset_name="${....test.dataset.names}"),
        L(SemSegEvaluator)(dataset_name="${....test.dataset.names}"),
    ]
)
