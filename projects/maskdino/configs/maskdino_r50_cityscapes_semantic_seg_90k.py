"""Mask DINO R50, Cityscapes semantic segmentation, 90k iterations.

Released: mIoU 79.8. Official config:
`configs/cityscapes/semantic-segmentation/maskdino_R50_bs16_90k_steplr.yaml`: the ADE20K model
with 19 classes and a SyncBN backbone (BatchNorm statistics are trained); 90k iterations with
x0.1 at 80k and 87k.
"""

from detrex_ext.solver.lr_schedule_configs import multistep_lr_scheduler

from .data.cityscapes_semantic import dataloader
from .maskdino_r50_ade20k_semantic_seg_160k import model, optimizer, train

model.num_classes = 19
model.backbone.norm = "SyncBN"
model.metadata = "${dataloader.train.dataset.names}"

train.max_iter = 90000
train.output_dir = "./output/maskdino_r50_cityscapes_semantic_seg_90k"

lr_multiplier = multistep_lr_scheduler(
    values=[1.0, 0.1, 0.01],
    milestones=[80000, 87000],
    warmup_steps=10,
    warmup_factor=1.0,
)

dataloader.train.total_batch_size = 16
dataloader.evaluator.output_dir = "${train.output_dir}/inference"
