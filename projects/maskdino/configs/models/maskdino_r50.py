"""Mask DINO with a ResNet-50 backbone: the reference COCO instance model.

Official config: `configs/coco/instance-segmentation/maskdino_R50_bs16_50ep_3s_dowsample1_2048.yaml`
(encoder FFN 2048, encoder levels res3-res5 plus one downsampled level, "low2high" level order,
300 queries, 9 decoder layers, mask-enhanced box init "mask2box", denoising "seg").

`model.num_classes` is the one place that holds the class count; every other `num_classes`
interpolates it. Task configs change `model.num_classes`, the test-time switches
(`instance_on`, `semantic_on`, `panoptic_on`) and `model.metadata` (the training dataset name).
"""

from detrex_ext.config import LazyCall as L
from detrex_ext.layers import ShapeSpec
from detrex_ext.modeling import (
    FocalClassCost,
    GIoUBoxCost,
    HungarianMatcher,
    L1BoxCost,
    MaskBCECost,
    MaskDiceCost,
    build_resnet_backbone,
)
from detrex_projects.maskdino.modeling import (
    MaskDINO,
    MaskDINODecoder,
    MaskDINOEncoder,
    MaskDINOHead,
    SetCriterion,
    maskdino_weight_dict,
)

model = L(MaskDINO)(
    num_classes=80,
    num_queries=300,
    backbone=L(build_resnet_backbone)(
        depth=50,
        norm="FrozenBN",
        out_features=["res2", "res3", "res4", "res5"],
        freeze_at=0,
        stride_in_1x1=False,
    ),
    sem_seg_head=L(MaskDINOHead)(
        num_classes="${..num_classes}",
        ignore_value=255,
        pixel_decoder=L(MaskDINOEncoder)(
            input_shape={
                "res2": L(ShapeSpec)(channels=256, stride=4),
                "res3": L(ShapeSpec)(channels=512, stride=8),
                "res4": L(ShapeSpec)(channels=1024, stride=16),
                "res5": L(ShapeSpec)(channels=2048, stride=32),
            },
            transformer_dropout=0.0,
            transformer_nheads=8,
            transformer_dim_feedforward=2048,
            transformer_enc_layers=6,
            conv_dim=256,
            mask_dim=256,
            norm="GN",
            transformer_in_features=["res3", "res4", "res5"],
            common_stride=4,
            num_feature_levels=3,
            total_num_feature_levels=4,
            feature_order="low2high",
            # Speed: True runs the encoder layers (and, through the decoder's interpolation, the
            # decoder layers) under the caller's bf16 autocast with fp32 sampling coordinates;
            # False keeps them in fp32 like the official code.
            transformer_autocast=False,
        ),
        transformer_predictor=L(MaskDINODecoder)(
            in_channels="${..pixel_decoder.conv_dim}",
            num_classes="${...num_classes}",
            hidden_dim=256,
            num_queries="${...num_queries}",
            nheads=8,
            dim_feedforward=2048,
            dec_layers=9,
            mask_dim="${..pixel_decoder.mask_dim}",
            enforce_input_project=False,
            two_stage=True,
            dn="seg",
            noise_scale=0.4,
            dn_num=100,
            initialize_box_type="mask2box",
            initial_pred=True,
            learn_tgt=False,
            total_num_feature_levels="${..pixel_decoder.total_num_feature_levels}",
            dropout=0.0,
            semantic_ce_loss="${...semantic_ce_loss}",
            transformer_autocast="${..pixel_decoder.transformer_autocast}",
        ),
    ),
    criterion=L(SetCriterion)(
        num_classes="${..num_classes}",
        # Cost terms in the official summation order; GIoU with the official eps.
        matcher=L(HungarianMatcher)(
            costs=[
                L(MaskBCECost)(weight=5.0),
                L(FocalClassCost)(weight=4.0, alpha=0.25, gamma=2.0, eps=1e-8),
                L(MaskDiceCost)(weight=5.0),
                L(L1BoxCost)(weight=5.0),
                L(GIoUBoxCost)(weight=2.0, eps=1e-6),
            ],
            num_points="${..num_points}",
        ),
        weight_dict=L(maskdino_weight_dict)(
            class_weight=4.0,
            mask_weight=5.0,
            dice_weight=5.0,
            box_weight=5.0,
            giou_weight=2.0,
            two_stage="${...sem_seg_head.transformer_predictor.two_stage}",
            dn="${...sem_seg_head.transformer_predictor.dn}",
            dec_layers="${...sem_seg_head.transformer_predictor.dec_layers}",
            deep_supervision=True,
        ),
        eos_coef=0.1,
        losses=["labels", "masks", "boxes"],
        num_points=12544,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
        dn="${..sem_seg_head.transformer_predictor.dn}",
        dn_losses=["labels", "masks", "boxes"],
        panoptic_on=False,
        semantic_ce_loss="${..semantic_ce_loss}",
    ),
    object_mask_threshold=0.25,
    overlap_threshold=0.8,
    metadata="coco_2017_train",
    size_divisibility=32,
    sem_seg_postprocess_before_inference=True,
    pixel_mean=[123.675, 116.280, 103.530],
    pixel_std=[58.395, 57.120, 57.375],
    semantic_on=False,
    instance_on=True,
    panoptic_on=False,
    test_topk_per_image=100,
    pano_temp=0.06,
    focus_on_box=False,
    transform_eval=True,
    semantic_ce_loss=False,
    # Memory saver: `model.activation_checkpointing=True` recomputes the backbone blocks and the
    # encoder/decoder layers in the backward (same losses and gradients, one more forward of
    # those parts per step); it turns on every submodule that supports it.
    activation_checkpointing=False,
    # Backbone and pixel-decoder convolutions in the NHWC layout (faster on CPU).
    channels_last=True,
)
