"""Normalisation layers for convolutional feature maps and the ``get_norm`` factory.

Names and buffer layouts follow detectron2, so detectron2-format checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FrozenBatchNorm2d", "LayerNorm2d", "get_norm"]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d whose statistics and affine parameters are fixed buffers.

    Computes ``y = x * scale + shift`` with ``scale = weight / sqrt(running_var + eps)`` and
    ``shift = bias - running_mean * scale``. ``weight``, ``bias``, ``running_mean`` and
    ``running_var`` are buffers (not parameters), so the optimiser never sees them and they are
    saved in the state_dict under the same names as ``nn.BatchNorm2d``'s. A ``num_batches_tracked``
    entry in a loaded checkpoint is ignored and none is saved.

    Shapes: input ``[B, C, H, W]`` -> output ``[B, C, H, W]``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.requires_grad and x.dtype == self.weight.dtype:
            # Inference: the fused kernel, as detectron2 uses there (bit-equal to its outputs).
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        # Computed in the buffers' dtype (fp32) and cast back, so bf16 inputs keep fp32 statistics.
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        out_dtype = x.dtype
        return (x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)).to(out_dtype)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Replace every ``BatchNorm2d`` / ``SyncBatchNorm`` in ``module`` by a frozen copy.

        Returns the converted module: a new ``FrozenBatchNorm2d`` if ``module`` itself is a batch
        norm, otherwise ``module`` with its children replaced in place.
        """
        if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            frozen = cls(module.num_features, eps=module.eps)
            if module.affine:
                frozen.weight.data.copy_(module.weight.detach())
                frozen.bias.data.copy_(module.bias.detach())
            if module.running_mean is not None:
                frozen.running_mean.data.copy_(module.running_mean)
                frozen.running_var.data.copy_(module.running_var)
            return frozen
        for name, child in module.named_children():
            new_child = cls.convert_frozen_batchnorm(child)
            if new_child is not child:
                module.add_module(name, new_child)
        return module


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of a ``[B, C, H, W]`` map (detectron2's ``"LN"``).

    Shapes: input ``[B, C, H, W]`` -> output ``[B, C, H, W]``; parameters ``weight``/``bias`` [C].
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


_NORMS: dict[str, Callable[[int], nn.Module]] = {
    "BN": nn.BatchNorm2d,
    "SyncBN": nn.SyncBatchNorm,
    "FrozenBN": FrozenBatchNorm2d,
    "GN": lambda channels: nn.GroupNorm(32, channels),
    "LN": LayerNorm2d,
}


def get_norm(norm: str | Callable[[int], nn.Module] | None, out_channels: int) -> nn.Module | None:
    """Build a normalisation layer for ``out_channels`` channels.

    Args:
        norm: one of ``"BN"``, ``"SyncBN"`` (plain BN when no process group is running),
            ``"FrozenBN"``, ``"GN"`` (32 groups), ``"LN"`` (channel LayerNorm), ``""``/``None``
            (no norm), or a callable ``channels -> nn.Module``.
        out_channels: number of channels C of the ``[B, C, H, W]`` input.

    Returns:
        The module, or ``None`` when ``norm`` is empty.
    """
    if norm is None or norm == "":
        return None
    if isinstance(norm, str):
        if norm not in _NORMS:
            raise ValueError(
                f"Unknown norm {norm!r}; choose one of {sorted(_NORMS)} or '' for no norm."
            )
        return _NORMS[norm](out_channels)
    return norm(out_channels)
