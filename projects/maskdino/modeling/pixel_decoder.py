"""MaskDINOEncoder: Mask DINO's pixel decoder.

A deformable transformer encoder over the multi-scale backbone maps (plus extra stride-2
downsampled levels), followed by a one-level FPN step that fuses the highest-resolution encoder
output with the stride-4 backbone map into the per-pixel `mask_features`.

Module and attribute names mirror the official implementation (IDEA-Research/MaskDINO,
`maskdino/modeling/pixel_decoder/maskdino_encoder.py`) so that released checkpoints load with an
identity key map: `input_proj.{k}.{0,1}`, `transformer.level_embed`,
`transformer.encoder.layers.{l}.{self_attn,norm1,linear1,linear2,norm2}`, `adapter_1`, `layer_1`,
`mask_features`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from fvcore.nn import weight_init
from torch import Tensor, nn
from torch.nn import functional as F

from detrex_ext.layers import (
    Conv2d,
    ShapeSpec,
    get_norm,
)
from detrex_ext.layers.precision import autocast_or_fp32

from .encoder import MSDeformAttnEncoder, MSDeformAttnEncoderLayer, MSDeformAttnEncoderOnly
from .position_encoding import PositionEmbeddingSine

__all__ = ["MaskDINOEncoder", "MSDeformAttnEncoderLayer", "MSDeformAttnEncoder"]

FeatureOrder = str  # "low2high" or "high2low"


def as_shape_spec(spec: ShapeSpec | Mapping) -> ShapeSpec:
    """Accept a `ShapeSpec` or a plain mapping with `channels` and `stride`."""
    if isinstance(spec, ShapeSpec):
        return spec
    return ShapeSpec(channels=spec["channels"], stride=spec["stride"])


class MaskDINOEncoder(nn.Module):
    """Multi-scale deformable encoder plus the stride-4 mask-feature branch.

    Args:
        input_shape: backbone maps the pixel decoder receives, name -> ShapeSpec(channels, stride)
            (e.g. res2..res5).
        transformer_dropout: dropout inside the encoder layers.
        transformer_nheads: deformable attention heads.
        transformer_dim_feedforward: FFN width of the encoder layers.
        transformer_enc_layers: number of encoder layers.
        conv_dim: D, the token width and FPN width.
        mask_dim: channels of `mask_features`.
        norm: norm of the FPN convs ("GN" in every released config).
        transformer_in_features: maps that enter the encoder (e.g. res3..res5).
        common_stride: stride of `mask_features` (4).
        num_feature_levels: unused by the computation; kept for config compatibility.
        total_num_feature_levels: encoder levels including the extra downsampled ones.
        feature_order: "low2high" or "high2low"; fixes the level order of the encoder (and,
            reversed, of the decoder). See the spec's section 3.3.
        activation_checkpointing: recompute each encoder layer in the backward (training only):
            same outputs and gradients, less memory.
        transformer_autocast: run the deformable encoder layers under the caller's autocast
            (bf16 linears, fp32 sampling coordinates) instead of fp32; the input projections,
            FPN and mask-feature convolutions stay fp32.
    """

    def __init__(
        self,
        *,
        input_shape: Mapping[str, ShapeSpec],
        transformer_dropout: float = 0.0,
        transformer_nheads: int = 8,
        transformer_dim_feedforward: int = 2048,
        transformer_enc_layers: int = 6,
        conv_dim: int = 256,
        mask_dim: int = 256,
        norm: str = "GN",
        transformer_in_features: list[str] = ("res3", "res4", "res5"),
        common_stride: int = 4,
        num_feature_levels: int = 3,
        total_num_feature_levels: int = 4,
        feature_order: FeatureOrder = "low2high",
        activation_checkpointing: bool = False,
        transformer_autocast: bool = False,
    ) -> None:
        super().__init__()
        self.transformer_autocast = transformer_autocast
        if feature_order not in ("low2high", "high2low"):
            raise ValueError(
                f"feature_order must be 'low2high' or 'high2low', got {feature_order!r}"
            )
        shapes = {k: as_shape_spec(v) for k, v in input_shape.items()}
        missing = [f for f in transformer_in_features if f not in shapes]
        if missing:
            raise ValueError(
                f"transformer_in_features {missing} are not in input_shape {sorted(shapes)}"
            )
        by_stride = sorted(shapes.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in by_stride]
        feature_channels = [v.channels for _, v in by_stride]
        self.feature_order = feature_order
        self.common_stride = common_stride
        self.maskdino_num_feature_levels = num_feature_levels
        self.total_num_feature_levels = total_num_feature_levels

        # T: encoder features, coarsest first for low2high, finest first for high2low.
        sign = -1 if feature_order == "low2high" else 1
        enc = sorted(
            ((k, shapes[k]) for k in transformer_in_features), key=lambda kv: sign * kv[1].stride
        )
        self.transformer_in_features = [k for k, _ in enc]
        enc_channels = [v.channels for _, v in enc]
        self.transformer_feature_strides = [v.stride for _, v in enc]
        self.transformer_num_feature_levels = len(enc)
        if total_num_feature_levels < len(enc):
            raise ValueError(
                f"total_num_feature_levels={total_num_feature_levels} is smaller than the "
                f"{len(enc)} transformer_in_features"
            )
        self.low_resolution_index = enc_channels.index(max(enc_channels))
        self.high_resolution_index = 0 if feature_order == "low2high" else -1

        # input_proj[k] projects reversed(T)[k]; extra levels follow (3x3 stride-2 convs).
        projs = [self._proj(c, conv_dim, kernel_size=1) for c in enc_channels[::-1]]
        in_ch = max(enc_channels)
        for _ in range(total_num_feature_levels - len(enc)):
            projs.append(self._proj(in_ch, conv_dim, kernel_size=3, stride=2, padding=1))
            in_ch = conv_dim
        self.input_proj = nn.ModuleList(projs)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)

        self.transformer = MSDeformAttnEncoderOnly(
            d_model=conv_dim,
            nhead=transformer_nheads,
            num_encoder_layers=transformer_enc_layers,
            dim_feedforward=transformer_dim_feedforward,
            dropout=transformer_dropout,
            num_feature_levels=total_num_feature_levels,
            activation_checkpointing=activation_checkpointing,
        )
        self.pe_layer = PositionEmbeddingSine(num_pos_feats=conv_dim // 2, normalize=True)

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1, stride=1, padding=0)
        weight_init.c2_xavier_fill(self.mask_features)

        # The official formula; max(..., 1) keeps one FPN step even for a stride-4 encoder input.
        min_stride = min(self.transformer_feature_strides)
        self.num_fpn_levels = max(int(math.log2(min_stride) - math.log2(common_stride)), 1)
        use_bias = norm == ""
        lateral_convs, output_convs = [], []
        for idx, in_channels in enumerate(feature_channels[: self.num_fpn_levels]):
            lateral = Conv2d(
                in_channels, conv_dim, kernel_size=1, bias=use_bias, norm=get_norm(norm, conv_dim)
            )
            output = Conv2d(
                conv_dim,
                conv_dim,
                kernel_size=3,
                stride=1,
                padding=1,
                bias=use_bias,
                norm=get_norm(norm, conv_dim),
                activation=F.relu,
            )
            weight_init.c2_xavier_fill(lateral)
            weight_init.c2_xavier_fill(output)
            self.add_module(f"adapter_{idx + 1}", lateral)
            self.add_module(f"layer_{idx + 1}", output)
            lateral_convs.append(lateral)
            output_convs.append(output)
        # Plain lists (not ModuleLists) so the modules are registered once, under adapter_k.
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

    @staticmethod
    def _proj(in_channels: int, out_channels: int, **conv_kwargs) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(in_channels, out_channels, **conv_kwargs), nn.GroupNorm(32, out_channels)
        )

    def _encoder_inputs(self, features: Mapping[str, Tensor]) -> tuple[list, list]:
        """Project the backbone maps (and build the extra levels) in encoder level order."""
        srcs, pos = [], []
        for idx, name in enumerate(self.transformer_in_features[::-1]):
            x = features[name].float()
            srcs.append(self.input_proj[idx](x))
            pos.append(self.pe_layer(x))
        extra_srcs, extra_pos = [], []
        n_backbone = self.transformer_num_feature_levels
        if self.total_num_feature_levels > n_backbone:
            smallest = features[self.transformer_in_features[self.low_resolution_index]].float()
            for lvl in range(n_backbone, self.total_num_feature_levels):
                src = self.input_proj[lvl](smallest if lvl == n_backbone else extra_srcs[-1])
                extra_srcs.append(src)
                extra_pos.append(self.pe_layer(src))
        # The extra levels enter coarsest first: after the backbone levels for low2high,
        # before them for high2low.
        extra_srcs, extra_pos = extra_srcs[::-1], extra_pos[::-1]
        if self.feature_order == "low2high":
            return srcs + extra_srcs, pos + extra_pos
        return extra_srcs + srcs, extra_pos + pos

    def forward_features(
        self, features: Mapping[str, Tensor], masks: Tensor | None = None
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Encode the pyramid and build the mask features.

        Runs in float32 with autocast disabled, as the official code does; with
        `transformer_autocast` the encoder layers run under the caller's autocast (their fp32
        output feeds the FPN).

        Args:
            features: backbone maps, name -> `[B, C_name, H/stride, W/stride]`.
            masks: unused (the official head never passes a padding mask).

        Returns:
            mask_features `[B, mask_dim, H/4, W/4]`, the first encoder level `[B, D, h0, w0]`, and
            the `total_num_feature_levels` encoder outputs in encoder level order.
        """
        device_type = next(iter(features.values())).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            srcs, pos = self._encoder_inputs(features)
        with autocast_or_fp32(self.transformer_autocast, device_type):
            memory, spatial_shapes = self.transformer(srcs, pos)
        with torch.autocast(device_type=device_type, enabled=False):
            memory = memory.float()
            batch = memory.shape[0]
            sizes = [h * w for h, w in spatial_shapes]
            out = [
                z.transpose(1, 2).reshape(batch, -1, h, w)
                for z, (h, w) in zip(memory.split(sizes, dim=1), spatial_shapes)
            ]
            # FPN step(s): lateral backbone map + upsampled highest-resolution encoder output.
            for idx, name in enumerate(self.in_features[: self.num_fpn_levels][::-1]):
                cur = self.lateral_convs[idx](features[name].float())
                high = F.interpolate(
                    out[self.high_resolution_index],
                    size=cur.shape[-2:],
                    mode="bilinear",
                    align_corners=False,
                )
                out.append(self.output_convs[idx](cur + high))
            multi_scale_features = out[: self.total_num_feature_levels]
            return self.mask_features(out[-1]), out[0], multi_scale_features
