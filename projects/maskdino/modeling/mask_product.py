"""Mask logits of queries: ``einsum("bqc,bchw->bqhw", mask_embed, mask_features)``, with a backward
that skips the queries whose masks get no gradient.

In training most queries' masks get no gradient: the matcher reads every query's mask without
gradient, but only the matched queries (one per ground truth) and the denoising queries enter
the mask losses. The plain einsum backward multiplies the whole ``[B, Q, H*W]`` gradient, zero
rows included, by the mask features twice; here only the rows with a nonzero entry are
multiplied. The products of the kept rows are the same as the full product's (up to the order of
float summation inside the matrix multiplication); the skipped rows contribute exact zeros.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["query_masks"]


class _QueryMasks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mask_embed: Tensor, mask_features: Tensor) -> Tensor:
        ctx.save_for_backward(mask_embed, mask_features)
        return torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        mask_embed, mask_features = ctx.saved_tensors
        batch, queries, height, width = grad.shape
        flat_grad = grad.reshape(batch, queries, height * width)
        flat_features = mask_features.reshape(batch, -1, height * width)  # [B, C, HW]
        live = flat_grad.ne(0).any(-1)  # [B, Q]: rows that carry a gradient
        grad_embed = grad_features = None
        if ctx.needs_input_grad[0]:
            grad_embed = mask_embed.new_zeros(mask_embed.shape)
        if ctx.needs_input_grad[1]:
            grad_features = flat_features.new_zeros(flat_features.shape)
        for b in range(batch):
            rows = live[b].nonzero().flatten()
            if rows.numel() == 0:
                continue
            g = flat_grad[b].index_select(0, rows)  # [n, HW]
            if grad_embed is not None:
                grad_embed[b].index_copy_(0, rows, g @ flat_features[b].transpose(0, 1))
            if grad_features is not None:
                grad_features[b] = mask_embed[b].index_select(0, rows).transpose(0, 1) @ g
        if grad_features is not None:
            grad_features = grad_features.view(mask_features.shape)
        return grad_embed, grad_features


def query_masks(mask_embed: Tensor, mask_features: Tensor) -> Tensor:
    """``[B, Q, C]`` x ``[B, C, H, W]`` -> ``[B, Q, H, W]`` mask logits (see the module
    docstring). The row-skipping backward is used for CPU tensors outside autocast; elsewhere
    (no gradient, autocast, GPUs, where finding the live rows would synchronise) this is the
    plain einsum."""
    device = mask_embed.device.type
    if (
        device == "cpu"
        and torch.is_grad_enabled()
        and (mask_embed.requires_grad or mask_features.requires_grad)
        and not torch.is_autocast_enabled(device)
    ):
        return _QueryMasks.apply(mask_embed, mask_features)
    return torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
