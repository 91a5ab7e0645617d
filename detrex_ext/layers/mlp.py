"""``MLP`` (a stack of Linear layers with ReLU between them: DETR's box / mask heads) and
detrex's ``FFN`` (the feed-forward block of transformer layers, with its identity connection)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FFN", "MLP"]


class MLP(nn.Module):
    """``num_layers`` Linear layers ``input_dim -> hidden_dim -> ... -> output_dim``.

    ReLU follows every layer but the last. The layers live in ``self.layers`` (an
    ``nn.ModuleList``), so checkpoint keys read ``layers.0.weight``, ``layers.1.weight``, ...

    Shapes: ``[..., input_dim] -> [..., output_dim]``.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.num_layers = num_layers
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = F.relu(x)
        return x


class FFN(nn.Module):
    """Feed-forward block ``identity + Dropout(Linear(... act(Linear(x)) ...))`` (detrex).

    ``num_fcs - 1`` blocks ``Linear -> activation -> Dropout`` map ``embed_dim`` to
    ``feedforward_dim`` (and on), then ``Linear(feedforward_dim, output_dim) -> Dropout``. The
    layers live in ``self.layers`` (detrex's state_dict keys ``layers.0.0.weight``, ...).

    Args:
        embed_dim: input width.
        feedforward_dim: hidden width.
        output_dim: output width (default ``embed_dim``).
        num_fcs: Linear layers (>= 2).
        activation: activation module (default ``nn.ReLU(inplace=True)``), shared by the blocks.
        ffn_drop: dropout probability.
        fc_bias: Linear layers with bias.
        add_identity: add the identity (the input, or ``identity`` given to ``forward``).

    Shapes: ``[..., embed_dim] -> [..., output_dim]``.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        feedforward_dim: int = 1024,
        output_dim: int | None = None,
        num_fcs: int = 2,
        activation: nn.Module | None = None,
        ffn_drop: float = 0.0,
        fc_bias: bool = True,
        add_identity: bool = True,
    ) -> None:
        super().__init__()
        if num_fcs < 2:
            raise ValueError(f"FFN needs num_fcs >= 2, got {num_fcs}")
        self.embed_dim = embed_dim
        self.feedforward_dim = feedforward_dim
        self.num_fcs = num_fcs
        self.activation = nn.ReLU(inplace=True) if activation is None else activation
        output_dim = embed_dim if output_dim is None else output_dim
        layers: list[nn.Module] = []
        in_dim = embed_dim
        for _ in range(num_fcs - 1):
            layers.append(
                nn.Sequential(
                    nn.Linear(in_dim, feedforward_dim, bias=fc_bias),
                    self.activation,
                    nn.Dropout(ffn_drop),
                )
            )
            in_dim = feedforward_dim
        layers += [nn.Linear(feedforward_dim, output_dim, bias=fc_bias), nn.Dropout(ffn_drop)]
        self.layers = nn.Sequential(*layers)
        self.add_identity = add_identity

    def forward(self, x: torch.Tensor, identity: torch.Tensor | None = None) -> torch.Tensor:
        """``identity`` (default ``x``) plus the block's output, or the output alone without
        ``add_identity``."""
        out = self.layers(x)
        if not self.add_identity:
            return out
        return (x if identity is None else identity) + out
