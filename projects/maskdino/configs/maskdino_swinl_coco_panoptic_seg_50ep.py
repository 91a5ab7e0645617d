"""Mask DINO Swin-L, COCO panoptic segmentation, 50 epochs.

Released: PQ 58.3. Official config:
`configs/coco/panoptic-segmentation/swin/maskdino_R50_bs16_50ep_4s_dowsample1_2048.yaml` (133
classes, 5 feature levels, no mask-enhanced box init, semantic + instance + panoptic outputs).
"""

from .data.coco_panoptic_lsj import dataloader
from .maskdino_swinl_coco_instance_seg_50ep import lr_multiplier, model, optimizer, train

model.num_classes = 133
model.sem_seg_head.transformer_predictor.initialize_box_type = "no"
model.semantic_on = True
model.instance_on = True
model.panoptic_on = True
model.criterion.panoptic_on = False
model.metadata = "${dataloader.train.dataset.names}"

train.output_dir = "./output/maskdino_swinl_coco_panoptic_seg_50ep"
dataloader.train.total_batch_size = 16
for _evaluator in dataloader.evaluator.evaluators:
    _evaluator.output_dir = "${train.output_dir}/inference"
