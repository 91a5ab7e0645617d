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

__all__ = [
    "Backbone",
    "BasicBlock",
    "BasicStem",
    "BottleneckBlock",
    "ResNet",
    "build_resnet_backbone",
    "convert_d2_resnet_to_torchvision",
    "convert_torchvision_resnet_state_dict",
]
