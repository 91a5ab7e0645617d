"""detectron2-style ``Conv2d``: a convolution that owns its norm and activation."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["Conv2d"]


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` followed by an optional ``norm`` submodule and activation.

    The norm is registered as the child ``norm``, so a conv named ``conv1`` stores
    ``conv1.weight`` and ``conv1.norm.weight`` (detectron2's checkpoint layout).

    Args:
        *args, **kwargs: as for ``nn.Conv2d``.
        norm: a normalisation module (e.g. from ``get_norm``) or ``None``.
        activation: a callable applied last (e.g. ``F.relu``) or ``None``.

    Shapes: input ``[B, C_in, H, W]`` -> output ``[B, C_out, H_out, W_out]``.
    """

    def __init__(
        self,
        *args,
        norm: nn.Module | None = None,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._conv_forward(x, self.weight, self.bias)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x
