"""``MultiScaleDeformableAttention``: the MSDeformAttn module of Deformable DETR.

Parameter names (``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``) and
the initialisation follow the original, so its checkpoints load unchanged. Unlike detrex's
variant, the residual connection, dropout and positional embedding are NOT inside: callers pass
``query = content + pos`` and add the residual themselves.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .multi_scale_deform_attn_op import SpatialShapes, multi_scale_deformable_attn

__all__ = ["MultiScaleDeformableAttention"]


class MultiScaleDeformableAttention(nn.Module):
    """Multi-scale deformable attention over a flattened multi-level feature map.

    Args:
        embed_dim: channels C of queries and values.
        num_heads: attention heads H (``embed_dim`` must be divisible by it).
        num_levels: feature levels L.
        num_points: sampling points P per head and level.
    """

    def __init__(
        self, embed_dim: int = 256, num_heads: int = 8, num_levels: int = 4, num_points: int = 4
    ) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})"
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The original initialisation.

        Offsets start on a ring: head h points in direction ``2*pi*h/H`` scaled so that its
        largest coordinate is 1, and point p sits at ``(p + 1)`` times that vector (in pixels of
        each level); attention weights start uniform (zero logits); projections are Xavier with
        zero bias.
        """
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (
            2.0 * math.pi / self.num_heads
        )
        directions = torch.stack([thetas.cos(), thetas.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True)[0]
        scales = torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        grid = directions.view(self.num_heads, 1, 1, 2) * scales  # [H, 1, P, 2]
        grid = grid.expand(self.num_heads, self.num_levels, self.num_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.constant_(proj.bias, 0.0)

    # The original method name; model code that re-runs the init after a global Xavier pass calls it.
    _reset_parameters = reset_parameters

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: SpatialShapes,
        input_level_start_index: torch.Tensor | None = None,
        input_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from each query to P points per head and level around its reference.

        Args:
            query: ``[B, Q, C]`` (content plus positional embedding).
            reference_points: ``[B, Q, L, 2]`` normalised (x, y) points, offsets measured in
                pixels of each level; or ``[B, Q, L, 4]`` normalised (cx, cy, w, h) boxes,
                offsets measured in units of ``box_size / (2 * P)``.
            input_flatten: ``[B, S, C]`` the values of all levels, ``S = sum_l H_l * W_l``.
            input_spatial_shapes: ``[L, 2]`` (H_l, W_l) as an int64 tensor or Python ints.
            input_level_start_index: ``[L]`` start of each level in ``S`` (or ``None``).
            input_padding_mask: ``[B, S]`` bool, True at padded positions (their value is zeroed).

        Returns:
            ``[B, Q, C]``, the attention output after ``output_proj`` (no residual).
        """
        batch, num_tokens = input_flatten.shape[:2]
        heads = self.num_heads

        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(batch, num_tokens, heads, self.embed_dim // heads)

        # The coordinates are computed in >= fp32 with autocast off: under bf16 autocast only the
        # value/output projections (and the sampled values) are low precision.
        with torch.autocast(device_type=query.device.type, enabled=False):
            offsets, weights = self._offsets_and_weights(query)
            locations = self._sampling_locations(reference_points, offsets, input_spatial_shapes)
        output = multi_scale_deformable_attn(
            value, input_spatial_shapes, input_level_start_index, locations, weights
        )
        return self.output_proj(output)

    def _offsets_and_weights(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampling offsets ``[B, Q, H, L, P, 2]`` and softmaxed weights ``[B, Q, H, L, P]``.

        Both are computed in ``promote(query, weight, fp32)`` (weights cast if lower), so they
        stay fp32 under autocast or when the module itself was cast to bf16.
        """
        batch, num_queries, _ = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        dtype = torch.promote_types(query.dtype, torch.float32)
        dtype = torch.promote_types(dtype, self.sampling_offsets.weight.dtype)
        query = query.to(dtype)
        offsets = _linear(self.sampling_offsets, query, dtype)
        offsets = offsets.view(batch, num_queries, heads, levels, points, 2)
        logits = _linear(self.attention_weights, query, dtype)
        weights = logits.view(batch, num_queries, heads, levels * points).softmax(-1)
        return offsets, weights.view(batch, num_queries, heads, levels, points)

    def _sampling_locations(
        self,
        reference_points: torch.Tensor,
        offsets: torch.Tensor,
        input_spatial_shapes: SpatialShapes,
    ) -> torch.Tensor:
        """Normalised sampling locations ``[B, Q, H, L, P, 2]`` from references and offsets."""
        if reference_points.shape[-1] == 2:
            if isinstance(input_spatial_shapes, torch.Tensor):
                shapes = input_spatial_shapes.to(device=offsets.device, dtype=offsets.dtype)
            else:
                shapes = torch.tensor(
                    [tuple(hw) for hw in input_spatial_shapes],
                    dtype=offsets.dtype,
                    device=offsets.device,
                )
            normalizer = shapes.flip(-1)  # (W_l, H_l)
            return (
                reference_points[:, :, None, :, None, :]
                + offsets / normalizer[None, None, None, :, None, :]
            )
        if reference_points.shape[-1] == 4:
            centers = reference_points[:, :, None, :, None, :2]
            sizes = reference_points[:, :, None, :, None, 2:]
            return centers + offsets / self.num_points * sizes * 0.5
        raise ValueError(
            "reference_points must end in 2 (x, y) or 4 (cx, cy, w, h) coordinates, got "
            f"shape {tuple(reference_points.shape)}"
        )

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"num_levels={self.num_levels}, num_points={self.num_points}"
        )


def _linear(layer: nn.Linear, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``layer(x)`` computed in ``dtype``: the module call itself when its weight is in ``dtype``
    (hooks run, the result is bit-identical to before), else with the parameters cast."""
    if layer.weight.dtype == dtype:
        return layer(x)
    bias = None if layer.bias is None else layer.bias.to(dtype)
    return F.linear(x, layer.weight.to(dtype), bias)
