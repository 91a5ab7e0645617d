"""ResNet building blocks with detectron2's module names: ``BasicStem``, ``BasicBlock``,
``BottleneckBlock`` (see ``resnet`` for the network and the parameter-name layout)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from detrex_ext.layers import Conv2d, FrozenBatchNorm2d, get_norm

__all__ = ["BasicBlock", "BasicStem", "BottleneckBlock"]


def _msra_fill(conv: nn.Conv2d) -> None:
    """detectron2's ``c2_msra_fill``: Kaiming normal (fan_out, ReLU) weights, zero bias."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.constant_(conv.bias, 0)


class _FreezableBlock(nn.Module):
    """A block with ``in_channels``, ``out_channels``, ``stride`` and a ``freeze()`` method."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def freeze(self) -> _FreezableBlock:
        """Stop gradients to every parameter and turn batch norms into ``FrozenBatchNorm2d``."""
        for param in self.parameters():
            param.requires_grad = False
        FrozenBatchNorm2d.convert_frozen_batchnorm(self)
        return self


class BasicStem(_FreezableBlock):
    """7x7 stride-2 conv (``conv1``, with norm) + ReLU + 3x3 stride-2 max pool: stride 4.

    Shapes: ``[B, in_channels, H, W] -> [B, out_channels, ceil(H/4), ceil(W/4)]`` (for even H, W).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: str = "BN") -> None:
        super().__init__(in_channels, out_channels, stride=4)
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=7,
            stride=2,
            padding=3,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        _msra_fill(self.conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


def _shortcut(in_channels: int, out_channels: int, stride: int, norm: str) -> Conv2d | None:
    if in_channels == out_channels:
        return None
    conv = Conv2d(
        in_channels,
        out_channels,
        kernel_size=1,
        stride=stride,
        bias=False,
        norm=get_norm(norm, out_channels),
    )
    _msra_fill(conv)
    return conv


class BasicBlock(_FreezableBlock):
    """Two 3x3 convs (``conv1`` carries the stride) plus the shortcut; ResNet-18/34.

    Shapes: ``[B, in_channels, H, W] -> [B, out_channels, H/stride, W/stride]``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, norm: str = "BN"):
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=3,
            stride=stride,
            padding=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        self.conv2 = Conv2d(
            out_channels,
            out_channels,
            kernel_size=3,
            padding=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        for conv in (self.conv1, self.conv2):
            _msra_fill(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu_(self.conv1(x)))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + identity)


class BottleneckBlock(_FreezableBlock):
    """1x1 reduce (``conv1``), 3x3 (``conv2``), 1x1 expand (``conv3``) plus the shortcut.

    Args:
        in_channels, out_channels: block input / output channels.
        bottleneck_channels: width of the 3x3 conv.
        stride: downsampling factor, in the 3x3 conv unless ``stride_in_1x1``.
        num_groups: groups of the 3x3 conv (ResNeXt).
        norm: norm name for ``get_norm``.
        stride_in_1x1: put the stride in ``conv1`` (the original MSRA ResNet) instead.
        dilation: dilation of the 3x3 conv.

    Shapes: ``[B, in_channels, H, W] -> [B, out_channels, H/stride, W/stride]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm: str = "BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
    ) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(
            in_channels,
            bottleneck_channels,
            kernel_size=1,
            stride=stride_1x1,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv2 = Conv2d(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            bias=False,
            groups=num_groups,
            dilation=dilation,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv3 = Conv2d(
            bottleneck_channels,
            out_channels,
            kernel_size=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        for conv in (self.conv1, self.conv2, self.conv3):
            _msra_fill(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + identity)
