"""The deformable transformer decoder of Mask DINO (DINO-style, with iterative box refinement).

Attribute names follow the official `dino_decoder.py` (IDEA-Research/MaskDINO) so checkpoints load
with an identity key map: `layers.{l}.{cross_attn,norm1,self_attn,norm2,linear1,linear2,norm3}`,
`norm`, `ref_point_head.layers.{0,1}` and the (shared) `bbox_embed.{l}`.

Queries are batch-first (`[B, Nq, D]`) here; the official code is sequence-first, which changes
nothing numerically.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detrex_ext.layers import (
    MLP,
    MultiScaleDeformableAttention,
    box_sine_embedding,
    inverse_sigmoid,
)
from detrex_ext.layers.activation_checkpointing import maybe_checkpoint
from detrex_ext.layers.precision import autocast_or_fp32

__all__ = ["DeformableTransformerDecoderLayer", "TransformerDecoder"]


class DeformableTransformerDecoderLayer(nn.Module):
    """Post-norm decoder layer: self-attention, deformable cross-attention, FFN.

    Runs in float32 with autocast disabled (as the official layer does) unless
    `transformer_autocast`.

    Args:
        d_model: query width D.
        d_ffn: FFN hidden width.
        dropout: dropout after each sub-layer (the official decoder hard-codes 0).
        n_levels, n_heads, n_points: deformable cross-attention layout; `n_heads` is also the
            number of self-attention heads.
        transformer_autocast: run the layer under the caller's autocast (e.g. bf16 linears and
            attention); the residual stream and the deformable sampling coordinates stay fp32.
    """

    def __init__(
        self,
        *,
        d_model: int = 256,
        d_ffn: int = 2048,
        dropout: float = 0.0,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
        transformer_autocast: bool = False,
    ) -> None:
        super().__init__()
        self.transformer_autocast = transformer_autocast
        self.cross_attn = MultiScaleDeformableAttention(
            embed_dim=d_model, num_heads=n_heads, num_levels=n_levels, num_points=n_points
        )
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        reference_points: Tensor,
        memory: Tensor,
        spatial_shapes: list[tuple[int, int]],
        level_start_index: Tensor,
        self_attn_mask: Tensor | None = None,
    ) -> Tensor:
        """Update the queries.

        Args:
            tgt, query_pos: `[B, Nq, D]` content queries and their positional embedding.
            reference_points: `[B, Nq, L, 4]` boxes (cx, cy, w, h) in [0, 1].
            memory: `[B, S, D]` flattened multi-scale features (decoder level order).
            spatial_shapes, level_start_index: layout of `memory`.
            self_attn_mask: `[Nq, Nq]` bool, True = blocked (denoising groups), or None.

        Returns:
            `[B, Nq, D]`.
        """
        with autocast_or_fp32(self.transformer_autocast, tgt.device.type):
            tgt, query_pos, memory = tgt.float(), query_pos.float(), memory.float()
            q = (tgt + query_pos).transpose(0, 1)
            attn = self.self_attn(q, q, tgt.transpose(0, 1), attn_mask=self_attn_mask)[0]
            tgt = self.norm2(tgt + self.dropout2(attn.transpose(0, 1)))

            attn = self.cross_attn(
                tgt + query_pos,
                reference_points.float(),
                memory,
                spatial_shapes,
                level_start_index,
                None,
            )
            tgt = self.norm1(tgt + self.dropout1(attn))

            # in place only without autograd: the 3-d product is a view of the matrix product,
            # and autograd would rebase it in the backward (CopySlices, AsStridedBackward copy
            # the whole [B, Nq, d_ffn] tensor several times)
            hidden = F.relu(self.linear1(tgt), inplace=not torch.is_grad_enabled())
            ffn = self.linear2(self.dropout3(hidden))
            return self.norm3(tgt + self.dropout4(ffn))


class TransformerDecoder(nn.Module):
    """Decoder stack with DINO's look-forward-twice box refinement.

    Args:
        num_layers: number of decoder layers.
        norm: the output LayerNorm (the same module as the predictor's `decoder_norm`).
        d_model: query width D.
        query_dim: 4 (anchor boxes).
        activation_checkpointing: recompute each layer in the backward (training only); the box
            refinement and the prediction heads outside the layers are not checkpointed.
        layer_kwargs: arguments of `DeformableTransformerDecoderLayer` (including
            `transformer_autocast`).

    The box MLP is attached after construction as `self.bbox_embed` (a ModuleList that holds one
    shared MLP per layer), exactly like the official code.
    """

    def __init__(
        self,
        *,
        num_layers: int,
        norm: nn.LayerNorm,
        d_model: int = 256,
        query_dim: int = 4,
        activation_checkpointing: bool = False,
        **layer_kwargs,
    ) -> None:
        super().__init__()
        self.activation_checkpointing = activation_checkpointing
        if query_dim != 4:
            raise ValueError("Mask DINO's decoder uses 4-d anchor boxes (query_dim=4)")
        self.layers = nn.ModuleList(
            DeformableTransformerDecoderLayer(d_model=d_model, **layer_kwargs)
            for _ in range(num_layers)
        )
        self.num_layers = num_layers
        self.norm = norm
        self.d_model = d_model
        self.ref_point_head = MLP(query_dim // 2 * d_model, d_model, d_model, 2)
        self.bbox_embed: nn.ModuleList | None = None
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MultiScaleDeformableAttention):
                m._reset_parameters()

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        refpoints_unsigmoid: Tensor,
        spatial_shapes: list[tuple[int, int]],
        level_start_index: Tensor,
        tgt_mask: Tensor | None = None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Run all layers.

        Args:
            tgt: `[B, Nq, D]` initial content queries.
            memory: `[B, S, D]` flattened features, no positional embedding.
            refpoints_unsigmoid: `[B, Nq, 4]` anchor logits (cx, cy, w, h).
            spatial_shapes, level_start_index: layout of `memory` (decoder level order).
            tgt_mask: `[Nq, Nq]` self-attention mask (True = blocked) or None.

        Returns:
            `hs`: num_layers tensors `[B, Nq, D]`, each layer output after `norm`;
            `refs`: num_layers + 1 boxes `[B, Nq, 4]` in [0, 1]: the input anchors, then each
            layer's refined boxes (not detached: the official "look forward twice").
        """
        num_levels = len(spatial_shapes)
        reference = refpoints_unsigmoid.sigmoid()
        refs, hs = [reference], []
        output = tgt
        for layer_id, layer in enumerate(self.layers):
            ref_input = reference[:, :, None].expand(-1, -1, num_levels, -1)
            query_pos = self.ref_point_head(box_sine_embedding(reference, self.d_model // 2))
            output = maybe_checkpoint(
                self.activation_checkpointing,
                layer,
                output,
                query_pos,
                ref_input,
                memory,
                spatial_shapes,
                level_start_index,
                tgt_mask,
            )
            # The refinement reads the raw (un-normed) layer output.
            delta = self.bbox_embed[layer_id](output)
            new_reference = (delta + inverse_sigmoid(reference)).sigmoid()
            reference = new_reference.detach()
            refs.append(new_reference)
            hs.append(self.norm(output))
        return hs, refs

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Switch per-layer activation checkpointing."""
        self.activation_checkpointing = enabled
