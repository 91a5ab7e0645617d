"""Mask DINO with a Swin-L backbone (ImageNet-22k, 384 pretraining).

Official config: `configs/coco/instance-segmentation/swin/maskdino_R50_bs16_50ep_4s_dowsample1_2048.yaml`:
the R50 reference model with a Swin-L backbone, res2-res5 all entering the encoder plus one
downsampled level (5 levels), and "bitmask" mask-enhanced box init.
"""

from detrex_ext.config import LazyCall as L
from detrex_ext.layers import ShapeSpec
from detrex_ext.modeling import SwinTransformer

from .maskdino_r50 import model

model.backbone = L(SwinTransformer)(
    pretrain_img_size=384,
    patch_size=4,
    embed_dim=192,
    depths=[2, 2, 18, 2],
    num_heads=[6, 12, 24, 48],
    window_size=12,
    mlp_ratio=4.0,
    qkv_bias=True,
    qk_scale=None,
    drop_rate=0.0,
    attn_drop_rate=0.0,
    drop_path_rate=0.3,
    ape=False,
    patch_norm=True,
    out_features=["res2", "res3", "res4", "res5"],
    freeze_at=0,
    # per-block activation checkpointing; `model.activation_checkpointing=True` turns it on here
    # and in the encoder and decoder layers (the memory saver)
    use_checkpoint=False,
)

model.sem_seg_head.pixel_decoder.input_shape = {
    "res2": L(ShapeSpec)(channels=192, stride=4),
    "res3": L(ShapeSpec)(channels=384, stride=8),
    "res4": L(ShapeSpec)(channels=768, stride=16),
    "res5": L(ShapeSpec)(channels=1536, stride=32),
}
model.sem_seg_head.pixel_decoder.transformer_in_features = ["res2", "res3", "res4", "res5"]
model.sem_seg_head.pixel_decoder.num_feature_levels = 4
model.sem_seg_head.pixel_decoder.total_num_feature_levels = 5
model.sem_seg_head.transformer_predictor.initialize_box_type = "bitmask"
