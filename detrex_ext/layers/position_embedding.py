"""Position embeddings: sine and learned ones of feature maps (detrex's, computed from a padding
mask), and the sine embedding of points / boxes (DAB/DINO decoders)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "PositionEmbeddingLearned",
    "PositionEmbeddingSine",
    "box_sine_embedding",
    "get_sine_pos_embed",
]


def _sine_cosine_interleaved(positions: torch.Tensor, dim_t: torch.Tensor) -> torch.Tensor:
    """``[..., 1] / [F] -> [..., F]`` with sin on even and cos on odd channels."""
    angles = positions / dim_t
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


def _frequencies(num_pos_feats: int, temperature: float, device: torch.device) -> torch.Tensor:
    """``t_k = temperature ** (2 * floor(k / 2) / num_pos_feats)`` for k < num_pos_feats, fp32."""
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)


class PositionEmbeddingSine(nn.Module):
    """detrex's 2-d sine embedding (DETR) of the valid pixels of a padding mask.

    For pixel row i and column j (counting only unpadded pixels), ``y = i + 1`` and ``x = j + 1``;
    with ``normalize`` they become ``(y + offset) / (valid rows + eps) * scale`` (likewise x).
    Channel k of each half is ``sin(y / t_k)`` for even k and ``cos(y / t_k)`` for odd k, with
    ``t_k = temperature ** (2 * floor(k/2) / num_pos_feats)``. Mask DINO's pixel decoder uses
    Mask2Former's ``(x, mask)`` variant in ``detrex_projects.maskdino``.

    Args:
        num_pos_feats: channels per axis; the output has ``2 * num_pos_feats`` channels.
        temperature: frequency base.
        scale: multiplier after normalisation (used only with ``normalize``).
        eps: added to the extent before dividing.
        offset: added to the 1-based positions before normalising.
        normalize: divide positions by the map's valid extent so they lie in (0, scale].
    """

    def __init__(
        self,
        num_pos_feats: int = 64,
        temperature: float = 10000,
        scale: float = 2 * math.pi,
        eps: float = 1e-6,
        offset: float = 0.0,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        if normalize and not isinstance(scale, (int, float)):
            raise ValueError(f"normalize=True needs a number as scale, got {scale!r}")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.eps = eps
        self.offset = offset

    def forward(self, mask: torch.Tensor, **kwargs) -> torch.Tensor:
        """Embed the pixel positions of a padding mask.

        Args:
            mask: ``[B, H, W]`` bool, True (nonzero) at padded pixels.
            kwargs: ignored (detrex's call convention).

        Returns:
            ``[B, 2 * num_pos_feats, H, W]`` fp32: the y-embedding channels, then the x ones.
        """
        not_mask = ~mask.bool()
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + self.eps) * self.scale
        dim_t = _frequencies(self.num_pos_feats, self.temperature, mask.device)
        pos_x = _sine_cosine_interleaved(x_embed[..., None], dim_t)
        pos_y = _sine_cosine_interleaved(y_embed[..., None], dim_t)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
            f"normalize={self.normalize}, scale={self.scale}"
        )


class PositionEmbeddingLearned(nn.Module):
    """A learned 2-d embedding: one table per axis, concatenated (column part first).

    Args:
        num_pos_feats: channels per axis; the output has ``2 * num_pos_feats`` channels.
        row_num_embed: rows the table covers (maps may have at most this many rows).
        col_num_embed: columns the table covers.
    """

    def __init__(
        self, num_pos_feats: int = 256, row_num_embed: int = 50, col_num_embed: int = 50
    ) -> None:
        super().__init__()
        self.row_embed = nn.Embedding(row_num_embed, num_pos_feats)
        self.col_embed = nn.Embedding(col_num_embed, num_pos_feats)
        self.num_pos_feats = num_pos_feats
        self.row_num_embed = row_num_embed
        self.col_num_embed = col_num_embed
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """``mask`` ``[B, H, W]`` (only its shape is used) -> ``[B, 2 * num_pos_feats, H, W]``:
        channels ``[:F]`` are ``col_embed[j]`` and ``[F:]`` are ``row_embed[i]`` at pixel (i, j)."""
        batch, h, w = mask.shape
        if h > self.row_num_embed or w > self.col_num_embed:
            raise ValueError(
                f"a {h}x{w} map needs row_num_embed >= {h} and col_num_embed >= {w} "
                f"(have {self.row_num_embed}, {self.col_num_embed})"
            )
        x_emb = self.col_embed(torch.arange(w, device=mask.device))  # [W, F]
        y_emb = self.row_embed(torch.arange(h, device=mask.device))  # [H, F]
        pos = torch.cat([x_emb[None].expand(h, w, -1), y_emb[:, None].expand(h, w, -1)], dim=-1)
        return pos.permute(2, 0, 1)[None].expand(batch, -1, -1, -1)


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
