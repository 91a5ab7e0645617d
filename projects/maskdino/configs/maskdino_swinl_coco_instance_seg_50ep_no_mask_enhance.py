"""Mask DINO Swin-L, COCO instance segmentation, 50 epochs, without mask-enhanced box init.

Released: mask AP 52.1, box AP 58.3. The matching official config is
`configs/coco/instance-segmentation/swin/maskdino_R50_bs16_50ep_4s_dowsample1_2048_no_maskEnhance.yaml`
(the official README links the mask-enhanced config for this checkpoint by mistake).
"""

from .maskdino_swinl_coco_instance_seg_50ep import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model.sem_seg_head.transformer_predictor.initialize_box_type = "no"
train.output_dir = "./output/maskdino_swinl_coco_instance_seg_50ep_no_mask_enhance"
