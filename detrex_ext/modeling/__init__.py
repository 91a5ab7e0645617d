"""Model-agnostic modeling pieces: matcher, losses, backbones."""

from .backbone import (
    Backbone,
    BasicBlock,
    BasicStem,
    BottleneckBlock,
    ResNet,
    build_resnet_backbone,
    convert_d2_resnet_to_torchvision,
    convert_torchvision_resnet_state_dict,
)
from .losses import (
    dice_loss,
    giou_loss,
    l1_box_loss,
    point_sampled_mask_losses,
    reduce_num_objects,
    sigmoid_ce_loss,
    sigmoid_focal_loss,
)
from .matcher import (
    FocalClassCost,
    GIoUBoxCost,
    HungarianMatcher,
    L1BoxCost,
    MaskBCECost,
    MaskDiceCost,
    MatchCost,
    SoftmaxClassCost,
)

__all__ = [
    "Backbone",
    "BasicBlock",
    "BasicStem",
    "BottleneckBlock",
    "FocalClassCost",
    "GIoUBoxCost",
    "HungarianMatcher",
    "L1BoxCost",
    "MaskBCECost",
    "MaskDiceCost",
    "MatchCost",
    "ResNet",
    "SoftmaxClassCost",
    "build_resnet_backbone",
    "convert_d2_resnet_to_torchvision",
    "convert_torchvision_resnet_state_dict",
    "dice_loss",
    "giou_loss",
    "l1_box_loss",
    "point_sampled_mask_losses",
    "reduce_num_objects",
    "sigmoid_ce_loss",
    "sigmoid_focal_loss",
]
