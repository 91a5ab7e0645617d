"""Mask DINO R50 on your own COCO-format instance segmentation data ("bring your own data").

The `dataset` section below is the only part to edit, on the command line or in a copy of this
file. By default it points at a COCO 2017 layout under `$DETREX_DATASETS/coco` (then
`$DETECTRON2_DATASETS/coco`, then `./datasets/coco`), so on full COCO only the root changes:

    python tools/train_net.py --config-file projects/maskdino/configs/maskdino_r50_custom_coco_instance_seg.py \\
        dataset.root=/data/coco --num-gpus 8

Your own data (a COCO instances json per split, polygons or RLE, any category ids):

    python tools/train_net.py --config-file projects/maskdino/configs/maskdino_r50_custom_coco_instance_seg.py \\
        dataset.train_json=/data/shapes/train.json dataset.train_images=/data/shapes/images \\
        dataset.val_json=/data/shapes/val.json dataset.val_images=/data/shapes/images \\
        model.num_classes=3

Both splits are registered (`register_coco_instances`) when the run builds them, under
`dataset.train_name` / `dataset.val_name` (new names: built-in ones such as `coco_2017_train` keep
their classes). The classes are the json's categories, sorted by id. `model.num_classes` is the
single place that holds the class count: the model checks it against the training json when it
is built and says which value to set.

Recipe: the reference R50 instance model (`maskdino_r50_coco_instance_seg_50ep`), LSJ at 1024,
batch 16, AdamW 1e-4, 50 COCO epochs; scale `train.max_iter` and the lr milestones to your data.
"""

from detrex_ext.config import LazyCall as L
from detrex_ext.data import register_coco_instances

from .maskdino_r50_coco_instance_seg_50ep import dataloader, lr_multiplier, model, optimizer, train

dataset = dict(
    root="${oc.env:DETREX_DATASETS,${oc.env:DETECTRON2_DATASETS,datasets}}/coco",
    train_name="custom_coco_train",
    train_json="${.root}/annotations/instances_train2017.json",
    train_images="${.root}/train2017",
    val_name="custom_coco_val",
    val_json="${.root}/annotations/instances_val2017.json",
    val_images="${.root}/val2017",
)

dataloader.train.dataset.names = L(register_coco_instances)(
    name="${dataset.train_name}",
    metadata={},
    json_file="${dataset.train_json}",
    image_root="${dataset.train_images}",
)
dataloader.test.dataset.names = L(register_coco_instances)(
    name="${dataset.val_name}",
    metadata={},
    json_file="${dataset.val_json}",
    image_root="${dataset.val_images}",
)
# Registers the training split while the model is built, so the class-count check can run.
model.metadata = "${dataloader.train.dataset.names}"
model.num_classes = 80  # the number of categories in dataset.train_json

train.output_dir = "./output/maskdino_r50_custom_coco_instance_seg"
train.visualize = dict(enabled=True, num_images=4, score_threshold=0.5, period=0)
