"""Mask DINO's deformable transformer encoder (the pixel decoder's `transformer` module).

Post-norm layers of multi-scale deformable self-attention and a ReLU FFN over the flattened
multi-scale tokens; the learned `level_embed` is added to the position embeddings. Names follow
the official `maskdino_encoder.py` (`transformer.level_embed`,
`transformer.encoder.layers.{l}.{self_attn,norm1,linear1,linear2,norm2}`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detrex_ext.layers import MultiScaleDeformableAttention
from detrex_ext.layers.activation_checkpointing import maybe_checkpoint

from .levels import flatten_levels

__all__ = ["MSDeformAttnEncoder", "MSDeformAttnEncoderLayer", "MSDeformAttnEncoderOnly"]

# Hidden FFN product per inference chunk (see MSDeformAttnEncoderLayer._ffn).
_FFN_CHUNK_BYTES = 8 << 20


class MSDeformAttnEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention then a ReLU FFN.

    Args:
        d_model: token width D.
        d_ffn: hidden width of the FFN.
        dropout: dropout after attention and inside the FFN.
        n_levels, n_heads, n_points: deformable attention layout.
    """

    def __init__(
        self,
        *,
        d_model: int = 256,
        d_ffn: int = 1024,
        dropout: float = 0.0,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
    ) -> None:
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(
            embed_dim=d_model, num_heads=n_heads, num_levels=n_levels, num_points=n_points
        )
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src: Tensor,
        pos: Tensor,
        reference_points: Tensor,
        spatial_shapes: list[tuple[int, int]],
        level_start_index: Tensor,
    ) -> Tensor:
        """src, pos: `[B, S, D]`; reference_points: `[B, S, L, 2]` -> `[B, S, D]`."""
        attn = self.self_attn(
            src + pos, reference_points, src, spatial_shapes, level_start_index, None
        )
        src = self.norm1(src + self.dropout1(attn))
        return self.norm2(src + self.dropout3(self._ffn(src)))

    def _ffn(self, src: Tensor) -> Tensor:
        """``linear2(relu(linear1(src)))``: `[B, S, D]` -> `[B, S, D]`.

        Under autograd the ReLU is out of place: the 3-d product is a view of the matrix
        product, and an in-place ReLU on a view makes autograd rebase it (CopySlices and
        AsStridedBackward copy the whole `[B, S, d_ffn]` tensor several times in the backward).
        Without autograd it is in place, and in eager inference the tokens go in chunks whose
        hidden product stays well under glibc's largest mmap threshold (32 MiB): a larger buffer
        is mapped fresh and page-faulted in on every call, a smaller one is reused from the heap
        (2 x 3190 tokens, 2 CPU threads: 0.87x the time; the same values).
        """
        if torch.is_grad_enabled() or self.training or torch.compiler.is_compiling():
            hidden = F.relu(self.linear1(src), inplace=not torch.is_grad_enabled())
            return self.linear2(self.dropout2(hidden))
        tokens = src.reshape(-1, src.shape[-1])
        rows = max(1, _FFN_CHUNK_BYTES // (self.linear1.out_features * src.element_size()))
        if tokens.shape[0] <= rows:
            return self.linear2(F.relu(self.linear1(src), inplace=True))
        out = tokens.new_empty(tokens.shape[0], self.linear2.out_features)
        for start in range(0, tokens.shape[0], rows):
            chunk = tokens[start : start + rows]
            out[start : start + rows] = self.linear2(F.relu(self.linear1(chunk), inplace=True))
        return out.view(*src.shape[:-1], -1)


class MSDeformAttnEncoder(nn.Module):
    """A stack of encoder layers (attribute `layers`, as in the official key names).

    With `activation_checkpointing`, each layer is recomputed in the backward in training.
    """

    def __init__(
        self, *, num_layers: int, activation_checkpointing: bool = False, **layer_kwargs
    ) -> None:
        super().__init__()
        self.activation_checkpointing = activation_checkpointing
        self.layers = nn.ModuleList(
            MSDeformAttnEncoderLayer(**layer_kwargs) for _ in range(num_layers)
        )

    @staticmethod
    def reference_points(
        spatial_shapes: list[tuple[int, int]], batch_size: int, device: torch.device
    ) -> Tensor:
        """Normalised pixel centres of every token, `[B, S, L, 2]` as (x, y).

        Without padding masks every valid ratio is 1, so each token's point is the same at every
        level.
        """
        points = []
        for h, w in spatial_shapes:
            ys = torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device) / h
            xs = torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device) / w
            ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
            points.append(torch.stack((ref_x.reshape(-1), ref_y.reshape(-1)), -1))
        ref = torch.cat(points, 0)[None, :, None, :]
        return ref.expand(batch_size, -1, len(spatial_shapes), -1)

    def forward(
        self,
        src: Tensor,
        spatial_shapes: list[tuple[int, int]],
        level_start_index: Tensor,
        pos: Tensor,
    ) -> Tensor:
        """src, pos: `[B, S, D]` -> encoded memory `[B, S, D]`."""
        ref = self.reference_points(spatial_shapes, src.shape[0], src.device)
        for layer in self.layers:
            src = maybe_checkpoint(
                self.activation_checkpointing,
                layer,
                src,
                pos,
                ref,
                spatial_shapes,
                level_start_index,
            )
        return src

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Switch per-layer activation checkpointing."""
        self.activation_checkpointing = enabled


class MSDeformAttnEncoderOnly(nn.Module):
    """Holds the learned `level_embed` and the encoder stack (official `transformer` module)."""

    def __init__(
        self,
        *,
        d_model: int,
        nhead: int,
        num_encoder_layers: int,
        dim_feedforward: int,
        dropout: float,
        num_feature_levels: int,
        enc_n_points: int = 4,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = MSDeformAttnEncoder(
            num_layers=num_encoder_layers,
            activation_checkpointing=activation_checkpointing,
            d_model=d_model,
            d_ffn=dim_feedforward,
            dropout=dropout,
            n_levels=num_feature_levels,
            n_heads=nhead,
            n_points=enc_n_points,
        )
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MultiScaleDeformableAttention):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: list[Tensor], pos_embeds: list[Tensor]) -> tuple[Tensor, list]:
        """srcs, pos_embeds: per level `[B, D, H_l, W_l]` -> (memory `[B, S, D]`, shapes)."""
        src_flatten, spatial_shapes, level_start_index = flatten_levels(srcs)
        pos_flatten = torch.cat(
            [
                p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
                for lvl, p in enumerate(pos_embeds)
            ],
            1,
        )
        memory = self.encoder(src_flatten, spatial_shapes, level_start_index, pos_flatten)
        return memory, spatial_shapes
