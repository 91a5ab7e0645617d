"""detrex's ``MultiheadAttention``: ``torch.nn.MultiheadAttention`` with position embeddings
added to query and key, and an identity connection."""

from __future__ import annotations

import warnings

import torch
from torch import nn

__all__ = ["MultiheadAttention"]


class MultiheadAttention(nn.Module):
    """``identity + Dropout(MHA(query + query_pos, key + key_pos, value))``.

    Args:
        embed_dim: model width.
        num_heads: attention heads.
        attn_drop: dropout of the attention weights.
        proj_drop: dropout of the attention output.
        batch_first: tensors are ``[B, N, C]`` (else ``[N, B, C]``).
        kwargs: further ``nn.MultiheadAttention`` arguments.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        batch_first: bool = False,
        **kwargs,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.batch_first = batch_first
        self.attn = nn.MultiheadAttention(
            embed_dim=embed_dim,
            num_heads=num_heads,
            dropout=attn_drop,
            batch_first=batch_first,
            **kwargs,
        )
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        identity: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        key_pos: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """Attend from ``query`` to ``key`` / ``value``.

        Args:
            query: ``[Nq, B, C]`` (``[B, Nq, C]`` with ``batch_first``).
            key: ``[Nk, B, C]``; default ``query``.
            value: like ``key``; default ``key``.
            identity: added to the output; default ``query`` (before ``query_pos``).
            query_pos: added to ``query``.
            key_pos: added to ``key``; default ``query_pos`` when it has ``key``'s shape.
            attn_mask: ``[Nq, Nk]`` (or ``[B * heads, Nq, Nk]``), True / -inf where not allowed.
            key_padding_mask: ``[B, Nk]``, True at padded keys.
            kwargs: ignored (lets layers pass one set of arguments to every module).

        Returns:
            Same shape as ``query``.
        """
        key = query if key is None else key
        value = key if value is None else value
        identity = query if identity is None else identity
        if key_pos is None and query_pos is not None:
            if query_pos.shape == key.shape:
                key_pos = query_pos
            else:
                warnings.warn(
                    f"position encoding of key is missing in {type(self).__name__}", stacklevel=2
                )
        if query_pos is not None:
            query = query + query_pos
        if key_pos is not None:
            key = key + key_pos
        out = self.attn(
            query=query,
            key=key,
            value=value,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
        )[0]
        return identity + self.proj_drop(out)
