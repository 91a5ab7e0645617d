"""Mask DINO R50, ADE20K semantic segmentation, 160k iterations.

Released: mIoU 48.7. Official config:
`configs/ade20k/semantic-segmentation/maskdino_R50_bs16_160k_steplr.yaml`: 150 classes, 100
learned queries (no two-stage selection, no mask-enhanced init), softmax CE class loss (151
logits), encoder FFN 1024 over res3-res5 ("high2low", 3 levels). Recipe: batch 16, AdamW 1e-4,
weight decay 0.05, backbone lr x0.1, clipping 0.01, no AMP, x0.1 at 135k and 150k.
"""

from detrex_ext.solver.lr_schedule_configs import multistep_lr_scheduler

from .data.ade20k_semantic import dataloader
from .maskdino_r50_coco_instance_seg_50ep import model, optimizer, train

model.num_classes = 150
model.num_queries = 100
model.semantic_ce_loss = True
model.semantic_on = True
model.instance_on = False
model.panoptic_on = False
model.object_mask_threshold = 0.8
model.overlap_threshold = 0.8
model.sem_seg_postprocess_before_inference = False
model.metadata = "${dataloader.train.dataset.names}"
model.sem_seg_head.pixel_decoder.transformer_dim_feedforward = 1024
model.sem_seg_head.pixel_decoder.total_num_feature_levels = 3
model.sem_seg_head.pixel_decoder.feature_order = "high2low"
model.sem_seg_head.transformer_predictor.two_stage = False
model.sem_seg_head.transformer_predictor.initialize_box_type = "no"

train.max_iter = 160000
train.amp.enabled = False
train.output_dir = "./output/maskdino_r50_ade20k_semantic_seg_160k"

lr_multiplier = multistep_lr_scheduler(
    values=[1.0, 0.1, 0.01],
    milestones=[135000, 150000],
    warmup_steps=10,
    warmup_factor=1.0,
)

dataloader.train.total_batch_size = 16
dataloader.evaluator.output_dir = "${train.output_dir}/inference"
