"""``Backbone``: the interface every backbone implements (detectron2's contract)."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

import torch
from torch import nn

from detrex_ext.layers import ShapeSpec

__all__ = ["Backbone"]


class Backbone(nn.Module, metaclass=ABCMeta):
    """A network that maps images ``[B, 3, H, W]`` to named feature maps.

    Subclasses set ``_out_features`` (names in output order), ``_out_feature_channels`` and
    ``_out_feature_strides`` (dicts keyed by name) and implement ``forward``.
    """

    _out_features: list[str]
    _out_feature_channels: dict[str, int]
    _out_feature_strides: dict[str, int]

    @abstractmethod
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[B, C, H, W]`` images -> ``{name: [B, C_name, H / stride_name, W / stride_name]}``."""

    @property
    def size_divisibility(self) -> int:
        """Input height and width must be multiples of this (0: no constraint)."""
        return 0

    @property
    def padding_constraints(self) -> dict[str, int]:
        """Extra padding rules (detectron2's ``size_divisibility`` / ``square_size`` keys)."""
        return {}

    def output_shape(self) -> dict[str, ShapeSpec]:
        """``{name: ShapeSpec(channels, stride)}`` of every output feature."""
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }
