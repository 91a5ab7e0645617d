"""Mask2Former's sine position embedding of a feature map, ``pe(x, mask=None)``.

Mask DINO's pixel decoder calls it with the feature map (for its shape and device) and an
optional padding mask; detrex's ``detrex_ext.layers.PositionEmbeddingSine`` takes the mask
alone. Same values as detrex's for the same mask.
"""

from __future__ import annotations

import math

import torch

from detrex_ext.layers import PositionEmbeddingSine as _MaskPositionEmbeddingSine

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(_MaskPositionEmbeddingSine):
    """The 2-d sine embedding of DETR / Mask2Former for a ``[B, C, H, W]`` feature map.

    Args:
        num_pos_feats: channels per axis; the output has ``2 * num_pos_feats`` channels.
        temperature: frequency base.
        normalize: divide positions by the map's valid extent so they lie in (0, scale].
        scale: multiplier after normalisation (2*pi by default); only with ``normalize``.
        eps: added to the extent before dividing.
        offset: added to the 1-based positions before normalising.
    """

    def __init__(
        self,
        num_pos_feats: int = 128,
        temperature: float = 10000,
        normalize: bool = True,
        scale: float | None = None,
        eps: float = 1e-6,
        offset: float = 0.0,
    ) -> None:
        if scale is not None and not normalize:
            raise ValueError("scale is only used with normalize=True; pass normalize=True")
        super().__init__(
            num_pos_feats,
            temperature,
            scale=2 * math.pi if scale is None else scale,
            eps=eps,
            offset=offset,
            normalize=normalize,
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Embed the pixel positions of ``x``.

        Args:
            x: ``[B, C, H, W]``; only its batch size, spatial size and device are used.
            mask: ``[B, H, W]`` bool, True at padded pixels, or ``None`` (no padding).

        Returns:
            ``[B, 2 * num_pos_feats, H, W]`` fp32: the y-embedding channels, then the x ones.
        """
        if mask is None:
            mask = torch.zeros((x.size(0), x.size(2), x.size(3)), device=x.device, dtype=torch.bool)
        return super().forward(mask)
