"""Mask DINO R50, COCO panoptic segmentation, 50 epochs.

Released: PQ 53.0. Official config:
`configs/coco/panoptic-segmentation/maskdino_R50_bs16_50ep_3s_dowsample1_2048.yaml` (133 classes,
no mask-enhanced box init, semantic + instance + panoptic outputs at test time). Training recipe
as the reference instance model.
"""

from .data.coco_panoptic_lsj import dataloader
from .maskdino_r50_coco_instance_seg_50ep import lr_multiplier, model, optimizer, train

model.num_classes = 133
model.sem_seg_head.transformer_predictor.initialize_box_type = "no"
model.semantic_on = True
model.instance_on = True
model.panoptic_on = True
model.object_mask_threshold = 0.25
model.overlap_threshold = 0.8
# Box losses on stuff segments too (the official PANO_BOX_LOSS=False).
model.criterion.panoptic_on = False
model.metadata = "${dataloader.train.dataset.names}"

train.output_dir = "./output/maskdino_r50_coco_panoptic_seg_50ep"
dataloader.train.total_batch_size = 16
for _evaluator in dataloader.evaluator.evaluators:
    _evaluator.output_dir = "${train.output_dir}/inference"
