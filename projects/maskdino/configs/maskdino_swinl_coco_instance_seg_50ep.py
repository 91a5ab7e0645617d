"""Mask DINO Swin-L, COCO instance segmentation, 50 epochs, mask-enhanced box init ("bitmask").

Released: mask AP 52.3, box AP 59.0 (222.8M parameters). Official config:
`configs/coco/instance-segmentation/swin/maskdino_R50_bs16_50ep_4s_dowsample1_2048.yaml`
(5 feature levels: res2-res5 plus one downsampled). Recipe as the R50 reference model (8 GPUs in
the paper). Backbone initialisation: the official run starts from Swin-L ImageNet-22k 384
weights converted to detectron2 names (`swin_large_patch4_window12_384_22k.pkl`); set
`train.init_checkpoint` to such a file (or a released model name to fine-tune).
"""

from .maskdino_r50_coco_instance_seg_50ep import (
    dataloader,
    lr_multiplier,
    optimizer,
    train,
)
from .models.maskdino_swin_l import model

model.metadata = "${dataloader.train.dataset.names}"
train.init_checkpoint = ""
train.output_dir = "./output/maskdino_swinl_coco_instance_seg_50ep"
