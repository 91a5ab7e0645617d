"""Backbones that return {name: feature map} and describe themselves with output_shape()."""

from .backbone import Backbone
from .resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet, build_resnet_backbone
from .resnet_convert import convert_d2_resnet_to_torchvision, convert_torchvision_resnet_state_dict
from .swin import SwinTransformer
from .timm_backbone import TimmBackbone

__all__ = [
    "Backbone",
    "BasicBlock",
    "BasicStem",
    "BottleneckBlock",
    "ResNet",
    "SwinTransformer",
    "TimmBackbone",
    "build_resnet_backbone",
    "convert_d2_resnet_to_torchvision",
    "convert_torchvision_resnet_state_dict",
]
