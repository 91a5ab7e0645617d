"""detrex's generic transformer layer (``BaseTransformerLayer``) and the base class of layer
stacks (``TransformerLayerSequence``), built from attention, FFN and norm modules.

A layer runs ``operation_order``, e.g. ``("self_attn", "norm", "cross_attn", "norm", "ffn",
"norm")`` (post-norm) or ``("norm", "self_attn", "norm", "ffn")`` (pre-norm: the identity of
each residual is the input of the preceding norm).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["BaseTransformerLayer", "TransformerLayerSequence"]

_OPERATIONS = {"self_attn", "norm", "cross_attn", "ffn"}


class BaseTransformerLayer(nn.Module):
    """One transformer layer made of the given modules, run in ``operation_order``.

    Args:
        attn: one attention module (deep-copied for every ``self_attn`` / ``cross_attn``) or a
            list with one module per attention, in order. Modules are called like detrex's
            ``MultiheadAttention``: ``(query, key, value, identity, query_pos=, key_pos=,
            attn_mask=, key_padding_mask=, **kwargs)`` and include the residual.
        ffn: FFN module (deep-copied per ``ffn``), called as ``ffn(x, identity)``.
        norm: norm module (deep-copied per ``norm``).
        operation_order: the operations in order; starting with ``"norm"`` makes it pre-norm.
    """

    def __init__(
        self,
        attn: nn.Module | Sequence[nn.Module],
        ffn: nn.Module,
        norm: nn.Module,
        operation_order: Sequence[str],
    ) -> None:
        super().__init__()
        if not operation_order or not set(operation_order) <= _OPERATIONS:
            raise ValueError(
                f"operation_order must list operations among {sorted(_OPERATIONS)}, "
                f"got {operation_order!r}"
            )
        num_attn = sum(op in ("self_attn", "cross_attn") for op in operation_order)
        if isinstance(attn, nn.Module):
            attn = [copy.deepcopy(attn) for _ in range(num_attn)]
        elif len(attn) != num_attn:
            raise ValueError(
                f"{len(attn)} attention modules given for the {num_attn} attentions of "
                f"operation_order {tuple(operation_order)}"
            )
        self.num_attn = num_attn
        self.operation_order = tuple(operation_order)
        self.pre_norm = self.operation_order[0] == "norm"
        self.attentions = nn.ModuleList(attn)
        self.embed_dim = self.attentions[0].embed_dim if num_attn else None
        self.ffns = nn.ModuleList(
            copy.deepcopy(ffn) for _ in range(self.operation_order.count("ffn"))
        )
        self.norms = nn.ModuleList(
            copy.deepcopy(norm) for _ in range(self.operation_order.count("norm"))
        )

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        key_pos: torch.Tensor | None = None,
        attn_masks: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
        query_key_padding_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """Run the operations on ``query``.

        Args:
            query: ``[Nq, B, C]`` or ``[B, Nq, C]``, as the attention modules expect.
            key, value: memory of the cross-attentions.
            query_pos, key_pos: position embeddings of query and key.
            attn_masks: one mask per attention (a single tensor is used for all, with a
                warning).
            query_key_padding_mask: ``[B, Nq]`` padding of the queries (self-attention).
            key_padding_mask: ``[B, Nk]`` padding of the keys (cross-attention).
            kwargs: passed to every attention module.

        Returns:
            The updated queries, shaped like ``query``.
        """
        if attn_masks is None:
            attn_masks = [None] * self.num_attn
        elif isinstance(attn_masks, torch.Tensor):
            warnings.warn(
                f"the same attn_mask is used by every attention in {type(self).__name__}",
                stacklevel=2,
            )
            attn_masks = [attn_masks] * self.num_attn
        elif len(attn_masks) != self.num_attn:
            raise ValueError(f"{len(attn_masks)} attn_masks given for {self.num_attn} attentions")
        norm_index = attn_index = ffn_index = 0
        identity = query
        for operation in self.operation_order:
            if operation == "norm":
                query = self.norms[norm_index](query)
                norm_index += 1
            elif operation == "ffn":
                query = self.ffns[ffn_index](query, identity if self.pre_norm else None)
                ffn_index += 1
            else:
                self_attention = operation == "self_attn"
                query = self.attentions[attn_index](
                    query,
                    query if self_attention else key,
                    query if self_attention else value,
                    identity if self.pre_norm else None,
                    query_pos=query_pos,
                    key_pos=query_pos if self_attention else key_pos,
                    attn_mask=attn_masks[attn_index],
                    key_padding_mask=(
                        query_key_padding_mask if self_attention else key_padding_mask
                    ),
                    **kwargs,
                )
                attn_index += 1
                identity = query
        return query


class TransformerLayerSequence(nn.Module):
    """Base class of encoders / decoders: ``self.layers`` holds ``num_layers`` layers.

    Args:
        transformer_layers: one layer (deep-copied ``num_layers`` times) or a list of
            ``num_layers`` layers.
        num_layers: number of layers.

    Subclasses implement ``forward``.
    """

    def __init__(
        self,
        transformer_layers: nn.Module | Sequence[nn.Module] | None = None,
        num_layers: int | None = None,
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.layers = nn.ModuleList()
        if isinstance(transformer_layers, nn.Module):
            if num_layers is None:
                raise ValueError("num_layers is needed to repeat a single transformer layer")
            self.layers.extend(copy.deepcopy(transformer_layers) for _ in range(num_layers))
        elif transformer_layers is not None:
            if num_layers is not None and len(transformer_layers) != num_layers:
                raise ValueError(
                    f"{len(transformer_layers)} transformer_layers given, num_layers={num_layers}"
                )
            self.layers.extend(transformer_layers)
            self.num_layers = len(self.layers)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")
