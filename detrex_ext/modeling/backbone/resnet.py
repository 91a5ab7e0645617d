"""ResNet with detectron2's module names, so detectron2 / Mask DINO checkpoints load unchanged.

Keys read ``stem.conv1.weight``, ``stem.conv1.norm.*``, ``res2.0.conv1.weight``,
``res2.0.conv1.norm.*``, ..., ``res5.2.conv3.norm.*`` and ``res{s}.0.shortcut(.norm).*``. The stride
of a downsampling bottleneck sits in its 3x3 conv (``stride_in_1x1=False``, torchvision's layout;
detectron2's MSRA-pretrained models use True). Use ``convert_torchvision_resnet_state_dict`` to
load torchvision / timm weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from detrex_ext.layers import Conv2d, FrozenBatchNorm2d, get_norm
from detrex_ext.layers.activation_checkpointing import maybe_checkpoint

from .backbone import Backbone

__all__ = [
    "BasicBlock",
    "BasicStem",
    "BottleneckBlock",
    "ResNet",
    "build_resnet_backbone",
]

_BLOCKS_PER_DEPTH = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


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


class ResNet(Backbone):
    """A stem followed by stages ``res2``, ``res3``, ...; returns the requested stage outputs.

    Args:
        stem: module with ``out_channels`` and ``stride`` attributes (e.g. ``BasicStem``).
        stages: one list of blocks per stage; stage i is named ``res{i + 2}``.
        out_features: names to return (``"stem"`` and/or ``"res2"``..). Stages after the last
            requested one are not built. Default: the last stage.
        freeze_at: 0 trains everything; k >= 1 freezes the stem and the first k - 1 stages
            (``requires_grad=False`` and frozen batch norm), as detectron2's ``FREEZE_AT``.
        activation_checkpointing: in training, recompute the stem and each block in the backward
            instead of keeping their activations (frozen parts are never checkpointed: they keep
            nothing for the backward). Same outputs and gradients, less memory, one more forward.
    """

    def __init__(
        self,
        stem: nn.Module,
        stages: Sequence[Sequence[nn.Module]],
        out_features: Sequence[str] | None = None,
        freeze_at: int = 0,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.activation_checkpointing = activation_checkpointing
        stage_names = [f"res{i + 2}" for i in range(len(stages))]
        out_features = list(out_features) if out_features is not None else [stage_names[-1]]
        unknown = [name for name in out_features if name not in ["stem", *stage_names]]
        if unknown:
            raise ValueError(
                f"Unknown ResNet out_features {unknown}; available: {['stem', *stage_names]}"
            )
        num_stages = max(
            [stage_names.index(name) + 1 for name in out_features if name != "stem"], default=0
        )
        self._out_features = out_features
        self._out_feature_strides = {"stem": stem.stride}
        self._out_feature_channels = {"stem": stem.out_channels}
        self.stage_names: list[str] = []
        stride = stem.stride
        for name, blocks in zip(stage_names[:num_stages], stages[:num_stages]):
            stage = nn.Sequential(*blocks)
            self.add_module(name, stage)
            self.stage_names.append(name)
            stride *= math.prod(block.stride for block in blocks)
            self._out_feature_strides[name] = stride
            self._out_feature_channels[name] = blocks[-1].out_channels
        self.freeze(freeze_at)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[B, C, H, W]`` -> ``{name: [B, channels, H / stride, W / stride]}`` (rounded up)."""
        if x.dim() != 4:
            raise ValueError(f"ResNet takes a [B, C, H, W] batch, got shape {tuple(x.shape)}")
        outputs = {}
        x = maybe_checkpoint(self.activation_checkpointing, self.stem, x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name in self.stage_names:
            x = self._run_stage(getattr(self, name), x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def _run_stage(self, stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """The stage's blocks one by one (each its own checkpoint) or, unflagged, ``stage(x)``."""
        if not self.activation_checkpointing:
            return stage(x)
        for block in stage:
            x = maybe_checkpoint(True, block, x)
        return x

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Switch activation checkpointing of the stem and blocks (see the class docstring)."""
        self.activation_checkpointing = enabled

    def freeze(self, freeze_at: int = 0) -> ResNet:
        """Freeze the stem (``freeze_at >= 1``) and stages ``res2``..``res{freeze_at}``."""
        if freeze_at >= 1:
            self.stem.freeze()
        for index, name in enumerate(self.stage_names, start=2):
            if freeze_at >= index:
                for block in getattr(self, name):
                    block.freeze()
        return self

    @staticmethod
    def make_stage(
        block_class: type[nn.Module],
        num_blocks: int,
        *,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        **block_kwargs,
    ) -> list[nn.Module]:
        """``num_blocks`` blocks; the first maps ``in_channels`` and applies ``stride``."""
        blocks = []
        for i in range(num_blocks):
            blocks.append(
                block_class(
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    stride=stride if i == 0 else 1,
                    **block_kwargs,
                )
            )
        return blocks


def build_resnet_backbone(
    depth: int = 50,
    norm: str = "FrozenBN",
    out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
    freeze_at: int = 0,
    in_channels: int = 3,
    stem_out_channels: int = 64,
    res2_out_channels: int | None = None,
    num_groups: int = 1,
    width_per_group: int = 64,
    stride_in_1x1: bool = False,
    res5_dilation: int = 1,
    activation_checkpointing: bool = False,
) -> ResNet:
    """detectron2's ``build_resnet_backbone`` with explicit arguments (LazyCall-friendly).

    Args:
        depth: 18, 34, 50, 101 or 152.
        norm: norm of every conv (``"FrozenBN"``, ``"BN"``, ``"SyncBN"``, ``"GN"``, ...).
        out_features: returned stages (``"stem"``, ``"res2"``..``"res5"``).
        freeze_at: see ``ResNet``.
        in_channels: image channels.
        stem_out_channels: channels after the stem.
        res2_out_channels: output channels of res2 (doubling per stage); default 64 for depth
            18/34 and 256 otherwise.
        num_groups, width_per_group: ResNeXt settings (bottleneck width = groups * width * 2^i).
        stride_in_1x1: stride in the 1x1 conv of bottlenecks (MSRA weights) instead of the 3x3.
        res5_dilation: 1 or 2 (dilated res5 keeps stride 16).
        activation_checkpointing: see ``ResNet``.

    Returns:
        A ``ResNet``; ResNet-50 has 265 state_dict entries with ``norm="FrozenBN"``.
    """
    if depth not in _BLOCKS_PER_DEPTH:
        raise ValueError(f"ResNet depth must be one of {sorted(_BLOCKS_PER_DEPTH)}, got {depth}")
    if res5_dilation not in (1, 2):
        raise ValueError(f"res5_dilation must be 1 or 2, got {res5_dilation}")
    basic = depth in (18, 34)
    if res2_out_channels is None:
        res2_out_channels = 64 if basic else 256
    if basic and (res2_out_channels != 64 or num_groups != 1 or res5_dilation != 1):
        raise ValueError(
            "ResNet-18/34 need res2_out_channels=64, num_groups=1 and res5_dilation=1; "
            f"got {res2_out_channels}, {num_groups}, {res5_dilation}"
        )
    stem = BasicStem(in_channels, stem_out_channels, norm=norm)
    stages = []
    channels_in, channels_out = stem_out_channels, res2_out_channels
    bottleneck = num_groups * width_per_group
    for index, num_blocks in enumerate(_BLOCKS_PER_DEPTH[depth]):
        stage_id = index + 2
        dilation = res5_dilation if stage_id == 5 else 1
        first_stride = 1 if index == 0 or dilation == 2 else 2
        kwargs: dict = {"norm": norm}
        if basic:
            block_class = BasicBlock
        else:
            block_class = BottleneckBlock
            kwargs.update(
                bottleneck_channels=bottleneck,
                num_groups=num_groups,
                stride_in_1x1=stride_in_1x1,
                dilation=dilation,
            )
        stages.append(
            ResNet.make_stage(
                block_class,
                num_blocks,
                in_channels=channels_in,
                out_channels=channels_out,
                stride=first_stride,
                **kwargs,
            )
        )
        channels_in, channels_out, bottleneck = channels_out, channels_out * 2, bottleneck * 2
    return ResNet(
        stem,
        stages,
        out_features=out_features,
        freeze_at=freeze_at,
        activation_checkpointing=activation_checkpointing,
    )
