"""Sine position embeddings: for feature maps (DETR) and for points / boxes (DAB/DINO decoders)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine", "box_sine_embedding", "get_sine_pos_embed"]


def _sine_cosine_interleaved(positions: torch.Tensor, dim_t: torch.Tensor) -> torch.Tensor:
    """``[..., 1] / [F] -> [..., F]`` with sin on even and cos on odd channels."""
    angles = positions / dim_t
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


def _frequencies(num_pos_feats: int, temperature: float, device: torch.device) -> torch.Tensor:
    """``t_k = temperature ** (2 * floor(k / 2) / num_pos_feats)`` for k < num_pos_feats, fp32."""
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)


class PositionEmbeddingSine(nn.Module):
    """The 2-d sine embedding of DETR / Mask2Former for a ``[B, C, H, W]`` feature map.

    For pixel row i and column j (counting only unpadded pixels), ``y = i + 1 + offset`` and
    ``x = j + 1 + offset``; with ``normalize`` they are divided by the count of valid rows /
    columns (+ eps) and multiplied by ``scale``. Channel k of each half is ``sin(y / t_k)`` for even
    k and ``cos(y / t_k)`` for odd k, with ``t_k = temperature ** (2 * floor(k/2) / num_pos_feats)``.

    Args:
        num_pos_feats: channels per axis; the output has ``2 * num_pos_feats`` channels.
        temperature: frequency base.
        normalize: divide positions by the map's valid extent so they lie in (0, scale].
        scale: multiplier after normalisation (2*pi by default).
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
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("scale is only used with normalize=True; pass normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self.eps = eps
        self.offset = offset

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
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + self.eps) * self.scale
        dim_t = _frequencies(self.num_pos_feats, self.temperature, x.device)
        pos_x = _sine_cosine_interleaved(x_embed[..., None], dim_t)
        pos_y = _sine_cosine_interleaved(y_embed[..., None], dim_t)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
            f"normalize={self.normalize}, scale={self.scale}"
        )


def get_sine_pos_embed(
    pos_tensor: torch.Tensor,
    num_pos_feats: int = 128,
    temperature: float = 10000,
    scale: float = 2 * math.pi,
    exchange_xy: bool = True,
) -> torch.Tensor:
    """Sine embedding of normalised points or boxes, one block of channels per coordinate.

    Each coordinate c is multiplied by ``scale`` and embedded like ``PositionEmbeddingSine``
    (sin on even channels, cos on odd ones). With ``exchange_xy`` the first two blocks are swapped,
    giving the DAB-DETR / DINO / Mask DINO order (y, x) for points and (y, x, w, h) for
    (cx, cy, w, h) boxes.

    Args:
        pos_tensor: ``[..., n]`` coordinates in [0, 1] (n = 2 for points, 4 for boxes).
        num_pos_feats: channels per coordinate.
        temperature: frequency base.
        scale: multiplier applied to each coordinate.
        exchange_xy: swap the first two coordinate blocks.

    Returns:
        ``[..., n * num_pos_feats]`` (fp32 for fp32 / half inputs).
    """
    dim_t = _frequencies(num_pos_feats, temperature, pos_tensor.device)
    blocks = list(_sine_cosine_interleaved((pos_tensor * scale)[..., None], dim_t).unbind(-2))
    if exchange_xy and len(blocks) >= 2:
        blocks[0], blocks[1] = blocks[1], blocks[0]
    return torch.cat(blocks, dim=-1)


# Name used by decoder code for the (y, x, w, h) box embedding; the same function.
box_sine_embedding = get_sine_pos_embed
