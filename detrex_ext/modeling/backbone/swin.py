"""Swin Transformer backbone with the parameter names of Mask2Former / Mask DINO's ``D2SwinTransformer``.

Keys: ``patch_embed.proj``, ``patch_embed.norm``, ``layers.{i}.blocks.{j}.{norm1, attn.qkv,
attn.proj, attn.relative_position_bias_table, attn.relative_position_index, norm2, mlp.fc1,
mlp.fc2}``, ``layers.{i}.downsample.{reduction, norm}`` and one output norm ``norm{i}`` per returned
stage, so the official Swin checkpoints (ImageNet and Mask DINO) load unchanged. Stage i returns
``res{i + 2}`` (stride ``4 * 2**i``) in NCHW.

Swin-L as used by Mask DINO: ``SwinTransformer(embed_dim=192, depths=(2, 2, 18, 2),
num_heads=(6, 12, 24, 48), window_size=12, drop_path_rate=0.3, pretrain_img_size=384)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.init import trunc_normal_
from torchvision.ops import StochasticDepth

from detrex_ext.layers.activation_checkpointing import maybe_checkpoint

from .backbone import Backbone

__all__ = ["SwinTransformer"]


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """``[B, H, W, C]`` (H, W multiples of the window) -> ``[B * nW, window_size**2, C]``."""
    batch, height, width, channels = x.shape
    x = x.view(
        batch, height // window_size, window_size, width // window_size, window_size, channels
    )
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, channels)


def window_reverse(
    windows: torch.Tensor, window_size: int, height: int, width: int
) -> torch.Tensor:
    """Inverse of ``window_partition``: ``[B * nW, window_size**2, C]`` -> ``[B, H, W, C]``."""
    channels = windows.shape[-1]
    x = windows.view(
        -1, height // window_size, width // window_size, window_size, window_size, channels
    )
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)


class Mlp(nn.Module):
    """``fc1 -> GELU -> dropout -> fc2 -> dropout``; ``[..., C] -> [..., C]``."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias.

    ``relative_position_bias_table`` is ``[(2 * window - 1)**2, heads]``; the persistent buffer
    ``relative_position_index`` ``[window**2, window**2]`` picks its entry for each token pair.
    Shapes: ``[B * nW, N, C]`` with N = window**2, optional mask ``[nW, N, N]`` (0 / -100).
    """

    def __init__(
        self,
        dim: int,
        window_size: int,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        coords = torch.stack(
            torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
        ).flatten(1)  # [2, N]: (row, col) of each token
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
        index = relative[..., 0] * (2 * window_size - 1) + relative[..., 1]
        self.register_buffer("relative_position_index", index)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        windows, tokens, channels = x.shape
        qkv = self.qkv(x).reshape(windows, tokens, 3, self.num_heads, channels // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B * nW, heads, N, C / heads]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(tokens, tokens, -1).permute(2, 0, 1)  # [heads, N, N]
        if mask is not None:
            num_windows = mask.shape[0]
            bias = bias[None, None] + mask[None, :, None]  # [1, nW, heads, N, N]
            bias = bias.expand(windows // num_windows, -1, -1, -1, -1).reshape(
                windows, self.num_heads, tokens, tokens
            )
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=bias.to(q.dtype),
            dropout_p=self.attn_drop if self.training else 0.0,
            scale=self.scale,
        )
        out = out.transpose(1, 2).reshape(windows, tokens, channels)
        return self.proj_drop(self.proj(out))


class SwinTransformerBlock(nn.Module):
    """(Shifted) window attention + MLP, both pre-norm with residuals; ``[B, H*W, C]``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop: float,
        attn_drop: float,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim, window_size, num_heads, qkv_bias, qk_scale, attn_drop, drop
        )
        self.drop_path = (
            StochasticDepth(drop_path, mode="row") if drop_path > 0.0 else nn.Identity()
        )
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(
        self, x: torch.Tensor, height: int, width: int, attn_mask: torch.Tensor
    ) -> torch.Tensor:
        batch, _, channels = x.shape
        ws = self.window_size
        shortcut = x
        x = self.norm1(x).view(batch, height, width, channels)
        pad_b, pad_r = (ws - height % ws) % ws, (ws - width % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        padded_h, padded_w = height + pad_b, width + pad_r
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        windows = self.attn(window_partition(x, ws), attn_mask if self.shift_size > 0 else None)
        x = window_reverse(windows, ws, padded_h, padded_w)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = x[:, :height, :width].reshape(batch, height * width, channels)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat (order x[0::2,0::2], x[1::2,0::2], x[0::2,1::2], x[1::2,1::2]),
    LayerNorm, then Linear 4C -> 2C (``reduction``, no bias). ``[B, H*W, C] -> [B, ceil(H/2)*ceil(W/2), 2C]``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        batch, _, channels = x.shape
        x = x.view(batch, height, width, channels)
        x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(batch, -1, 4 * channels)))


def _shift_attention_mask(
    height: int, width: int, window_size: int, shift_size: int, device: torch.device
) -> torch.Tensor:
    """``[nW, N, N]``: 0 within a region of the shifted (padded) map, -100 across regions."""
    padded_h = -(-height // window_size) * window_size
    padded_w = -(-width // window_size) * window_size
    regions = torch.zeros(1, padded_h, padded_w, 1, device=device)
    bounds = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    count = 0
    for rows in bounds:
        for cols in bounds:
            regions[:, rows, cols, :] = count
            count += 1
    region_windows = window_partition(regions, window_size).squeeze(-1)  # [nW, N]
    mask = region_windows[:, None, :] - region_windows[:, :, None]
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class BasicLayer(nn.Module):
    """One stage: ``depth`` blocks (shift on odd blocks) and an optional ``downsample``."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop: float,
        attn_drop: float,
        drop_path: Sequence[float],
        downsample: bool,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.window_size, self.shift_size = window_size, window_size // 2
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim,
                num_heads,
                window_size,
                0 if i % 2 == 0 else window_size // 2,
                mlp_ratio,
                qkv_bias,
                qk_scale,
                drop,
                attn_drop,
                drop_path[i],
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, height: int, width: int):
        """``[B, H*W, C]`` -> (stage output ``[B, H*W, C]``, next input, next H, next W)."""
        mask = _shift_attention_mask(height, width, self.window_size, self.shift_size, x.device)
        for block in self.blocks:
            x = maybe_checkpoint(self.use_checkpoint, block, x, height, width, mask)
        if self.downsample is None:
            return x, x, height, width
        return x, self.downsample(x, height, width), (height + 1) // 2, (width + 1) // 2


class PatchEmbed(nn.Module):
    """Pad to a multiple of the patch size, ``proj`` conv (kernel = stride = patch), optional norm.

    Shapes: ``[B, C_in, H, W] -> [B, embed_dim, ceil(H / patch), ceil(W / patch)]``.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, patch_norm: bool) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        ps = self.patch_size
        x = F.pad(x, (0, (ps - width % ps) % ps, 0, (ps - height % ps) % ps))
        x = self.proj(x)
        if self.norm is not None:
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x


class SwinTransformer(Backbone):
    """Swin Transformer returning ``res2``..``res5`` (strides 4, 8, 16, 32), D2SwinTransformer names.

    Args:
        pretrain_img_size: image size of pretraining (sizes ``absolute_pos_embed`` when ``ape``).
        patch_size, in_chans, embed_dim, depths, num_heads, window_size, mlp_ratio, qkv_bias,
        qk_scale, drop_rate, attn_drop_rate, drop_path_rate, ape, patch_norm: the Swin
            hyper-parameters (stochastic depth rises linearly to ``drop_path_rate``).
        out_features: returned stages; each gets an output LayerNorm ``norm{i}``.
        freeze_at: 0 trains everything; 1 freezes ``patch_embed`` (and ``absolute_pos_embed``);
            k >= 2 also freezes ``layers[0..k-2]`` (Mask2Former's ``frozen_stages = k - 1``).
        use_checkpoint: activation checkpointing of every block in training (recomputed in the
            backward with the same stochastic-depth draws; frozen stages are never checkpointed).
    """

    def __init__(
        self,
        pretrain_img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        ape: bool = False,
        patch_norm: bool = True,
        out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        freeze_at: int = 0,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        num_stages = len(depths)
        stage_names = [f"res{i + 2}" for i in range(num_stages)]
        unknown = [name for name in out_features if name not in stage_names]
        if unknown or len(num_heads) != num_stages:
            raise ValueError(
                f"Swin out_features must be among {stage_names} (got unknown {unknown}) and "
                f"num_heads must have one entry per stage ({len(num_heads)} vs {num_stages})"
            )
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, patch_norm)
        self.ape = ape
        if ape:
            grid = pretrain_img_size // patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid, grid))
            trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)
        total_blocks = sum(depths)
        rates = [drop_path_rate * i / max(total_blocks - 1, 1) for i in range(total_blocks)]
        self.num_features = [int(embed_dim * 2**i) for i in range(num_stages)]
        self.layers = nn.ModuleList()
        for i in range(num_stages):
            self.layers.append(
                BasicLayer(
                    self.num_features[i],
                    depths[i],
                    num_heads[i],
                    window_size,
                    mlp_ratio,
                    qkv_bias,
                    qk_scale,
                    drop_rate,
                    attn_drop_rate,
                    rates[sum(depths[:i]) : sum(depths[: i + 1])],
                    downsample=i < num_stages - 1,
                    use_checkpoint=use_checkpoint,
                )
            )
        self._out_features = list(out_features)
        self._out_feature_strides = {}
        self._out_feature_channels = {}
        for i, name in enumerate(stage_names):
            if name in self._out_features:
                self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
                self._out_feature_strides[name] = patch_size * 2**i
                self._out_feature_channels[name] = self.num_features[i]
        self.apply(self._init_weights)
        self.freeze_at = freeze_at
        self._freeze()

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Switch ``use_checkpoint`` of every stage."""
        for layer in self.layers:
            layer.use_checkpoint = enabled

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.constant_(module.bias, 0)
        elif isinstance(module, nn.LayerNorm):
            nn.init.constant_(module.bias, 0)
            nn.init.constant_(module.weight, 1.0)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.freeze_at <= 0:
            return []
        return [self.patch_embed, *self.layers[: self.freeze_at - 1]]

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False
        if self.freeze_at >= 1 and self.ape:
            self.absolute_pos_embed.requires_grad = False

    def train(self, mode: bool = True) -> SwinTransformer:
        """Switch mode but keep frozen stages in eval mode (no dropout / drop path there)."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[B, C, H, W]`` -> ``{"res{i+2}": [B, C_i, ceil(H / 4 / 2**i), ...]}`` (padded as needed)."""
        if x.dim() != 4:
            raise ValueError(f"SwinTransformer takes a [B, C, H, W] batch, got {tuple(x.shape)}")
        x = self.patch_embed(x)
        height, width = x.shape[-2:]
        if self.ape:
            pos = F.interpolate(self.absolute_pos_embed, size=(height, width), mode="bicubic")
            x = x + pos
        x = self.pos_drop(x.flatten(2).transpose(1, 2))
        outputs = {}
        last = max(int(name[3:]) - 2 for name in self._out_features)
        for i, layer in enumerate(self.layers[: last + 1]):
            out, x, next_height, next_width = layer(x, height, width)
            name = f"res{i + 2}"
            if name in self._out_features:
                out = getattr(self, f"norm{i}")(out)
                outputs[name] = (
                    out.view(-1, height, width, self.num_features[i])
                    .permute(0, 3, 1, 2)
                    .contiguous()
                )
            height, width = next_height, next_width
        return {name: outputs[name] for name in self._out_features}
