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
from torch import nn

from detrex_ext.layers.activation_checkpointing import maybe_checkpoint

from .backbone import Backbone
from .resnet_blocks import BasicBlock, BasicStem, BottleneckBlock

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
        """``num_blocks`` blocks; the first maps ``in_channels`` and applies ``stride``.

        As in detectron2, a keyword ending in ``_per_block`` gives one value per block (e.g.
        ``stride_per_block=[2, 1, 1]`` instead of ``stride``); the others go to every block.
        """
        per_block = {
            k[: -len("_per_block")]: v for k, v in block_kwargs.items() if k.endswith("_per_block")
        }
        shared = {k: v for k, v in block_kwargs.items() if not k.endswith("_per_block")}
        for name, values in per_block.items():
            if len(values) != num_blocks:
                raise ValueError(
                    f"{name}_per_block has {len(values)} values for {num_blocks} blocks"
                )
        blocks = []
        for i in range(num_blocks):
            kwargs = {"stride": stride if i == 0 else 1, **shared}
            kwargs.update({name: values[i] for name, values in per_block.items()})
            blocks.append(
                block_class(in_channels if i == 0 else out_channels, out_channels, **kwargs)
            )
        return blocks

    @staticmethod
    def make_default_stages(
        depth: int, block_class: type[nn.Module] | None = None, **kwargs
    ) -> list[list[nn.Module]]:
        """detectron2's: the four stages (res2..res5) of a ResNet-``depth`` after a 64-channel
        stem (``BasicBlock`` for 18/34, ``BottleneckBlock`` with width ``out_channels / 4``
        otherwise). ``kwargs`` go to every block (e.g. ``norm``, ``stride_in_1x1``)."""
        return _default_stages(depth, block_class=block_class, **kwargs)


def _default_stages(
    depth: int,
    *,
    block_class: type[nn.Module] | None = None,
    in_channels: int = 64,
    res2_out_channels: int | None = None,
    num_groups: int = 1,
    width_per_group: int = 64,
    res5_dilation: int = 1,
    **block_kwargs,
) -> list[list[nn.Module]]:
    """Stages res2..res5: channels double per stage, stride 2 from res3 on (res5 keeps stride 1
    when dilated); bottleneck width ``num_groups * width_per_group * 2**i``."""
    if depth not in _BLOCKS_PER_DEPTH:
        raise ValueError(f"ResNet depth must be one of {sorted(_BLOCKS_PER_DEPTH)}, got {depth}")
    basic = depth in (18, 34)
    if block_class is None:
        block_class = BasicBlock if basic else BottleneckBlock
    if res2_out_channels is None:
        res2_out_channels = 64 if basic else 256
    stages = []
    channels_in, channels_out = in_channels, res2_out_channels
    bottleneck = num_groups * width_per_group
    for index, num_blocks in enumerate(_BLOCKS_PER_DEPTH[depth]):
        dilation = res5_dilation if index == 3 else 1
        kwargs = dict(block_kwargs)
        if not basic:
            kwargs["bottleneck_channels"] = bottleneck
            if num_groups != 1:
                kwargs["num_groups"] = num_groups
            if dilation != 1:
                kwargs["dilation"] = dilation
        stages.append(
            ResNet.make_stage(
                block_class,
                num_blocks,
                in_channels=channels_in,
                out_channels=channels_out,
                stride=1 if index == 0 or dilation == 2 else 2,
                **kwargs,
            )
        )
        channels_in, channels_out, bottleneck = channels_out, channels_out * 2, bottleneck * 2
    return stages


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
    stages = _default_stages(
        depth,
        in_channels=stem_out_channels,
        res2_out_channels=res2_out_channels,
        num_groups=num_groups,
        width_per_group=width_per_group,
        res5_dilation=res5_dilation,
        norm=norm,
        **({} if basic else {"stride_in_1x1": stride_in_1x1}),
    )
    return ResNet(
        stem,
        stages,
        out_features=out_features,
        freeze_at=freeze_at,
        activation_checkpointing=activation_checkpointing,
    )
