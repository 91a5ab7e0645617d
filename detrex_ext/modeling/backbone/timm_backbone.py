"""``TimmBackbone``: any timm ``features_only`` model as a ``Backbone`` with res{k} outputs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from detrex_ext.layers import FrozenBatchNorm2d
from detrex_ext.layers.activation_checkpointing import maybe_checkpoint

from .backbone import Backbone

__all__ = ["TimmBackbone"]

_NORM_OPTIONS = ("FrozenBN", "BN", "SyncBN", "")


def _feature_name(reduction: int) -> str:
    level = math.log2(reduction)
    if not level.is_integer():
        raise ValueError(f"feature stride {reduction} is not a power of two; cannot name it res<k>")
    return f"res{int(level)}"


class TimmBackbone(Backbone):
    """Wrap ``timm.create_model(model_name, features_only=True)``.

    Outputs are named by stride: stride ``2**k`` -> ``res{k}`` (res2..res5 for strides 4..32).

    Args:
        model_name: any timm model that supports ``features_only`` (e.g. ``"resnet50"``,
            ``"convnext_tiny"``).
        pretrained: download timm's pretrained weights (off by default; needs network access).
        out_features: names to return, in this order.
        in_channels: image channels.
        norm: ``"FrozenBN"`` turns every BatchNorm into ``FrozenBatchNorm2d``; ``"SyncBN"`` into
            ``nn.SyncBatchNorm``; ``"BN"`` / ``""`` keeps the model's own norms.
        freeze_at: 0 trains everything; 1 freezes the stem (all modules before the stride-4
            stage); k >= 2 freezes everything up to and including the stage of ``res{k}``
            (``requires_grad=False``; batch norms there become frozen).
        activation_checkpointing: in training, recompute the trainable stages (each block of a
            sequential stage) in the backward instead of keeping their activations. Same outputs,
            gradients and batch-norm statistics. Models that timm wraps as a module list
            (``FeatureListNet``: ResNets, ConvNeXts, ...) are checkpointed here; other wrappers
            use timm's own ``set_grad_checkpointing``.
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``).
    """

    def __init__(
        self,
        model_name: str,
        pretrained: bool = False,
        out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        in_channels: int = 3,
        norm: str = "FrozenBN",
        freeze_at: int = 0,
        activation_checkpointing: bool = False,
        **timm_kwargs,
    ) -> None:
        super().__init__()
        import timm

        if norm not in _NORM_OPTIONS:
            raise ValueError(f"TimmBackbone norm must be one of {_NORM_OPTIONS}, got {norm!r}")
        self.model = timm.create_model(
            model_name,
            pretrained=pretrained,
            features_only=True,
            in_chans=in_channels,
            **timm_kwargs,
        )
        self._channels_last_output = str(getattr(self.model, "output_fmt", "NCHW")).endswith("NHWC")
        info = self.model.feature_info
        self._all_names = [_feature_name(r) for r in info.reduction()]
        self._module_names = dict(zip(self._all_names, info.module_name()))
        unknown = [name for name in out_features if name not in self._all_names]
        if unknown:
            raise ValueError(
                f"{model_name} has no features {unknown}; available: {self._all_names}"
            )
        self._out_features = list(out_features)
        self._out_feature_strides = dict(zip(self._all_names, info.reduction()))
        self._out_feature_channels = dict(zip(self._all_names, info.channels()))
        if norm == "FrozenBN":
            FrozenBatchNorm2d.convert_frozen_batchnorm(self.model)
        elif norm == "SyncBN":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.freeze(freeze_at)
        self.activation_checkpointing = False
        self.set_activation_checkpointing(activation_checkpointing)

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Switch activation checkpointing (see the class docstring)."""
        if not self._is_module_list():
            # FeatureHookNet has the method; FeatureGetterNet wraps the model as `.model`
            target = self.model
            if not hasattr(target, "set_grad_checkpointing"):
                target = getattr(target, "model", None)
            if not hasattr(target, "set_grad_checkpointing"):
                raise ValueError(
                    f"timm's {type(self.model).__name__} has no set_grad_checkpointing(); "
                    "build TimmBackbone with activation_checkpointing=False"
                )
            target.set_grad_checkpointing(enabled)
        self.activation_checkpointing = enabled

    def _stage_module(self, name: str) -> nn.Module:
        module_name = self._module_names[name]
        try:
            return self.model.get_submodule(module_name)
        except AttributeError:  # FeatureListNet flattens "layers.0" into "layers_0"
            return self.model.get_submodule(module_name.replace(".", "_"))

    def freeze(self, freeze_at: int = 0) -> TimmBackbone:
        """Freeze the stem (``freeze_at=1``) or everything through stage ``res{freeze_at}``."""
        if freeze_at <= 0:
            return self
        name = "res2" if freeze_at == 1 else f"res{freeze_at}"
        if name not in self._module_names:
            raise ValueError(f"freeze_at={freeze_at}: this model has no {name} stage")
        stage_params = {id(p) for p in self._stage_module(name).parameters()}
        params = list(self.model.parameters())
        positions = [i for i, p in enumerate(params) if id(p) in stage_params]
        if not positions:
            raise ValueError(f"freeze_at={freeze_at}: the {name} stage has no parameters to locate")
        # stem: everything registered before the res2 stage; else: up to the end of that stage
        end = positions[0] if freeze_at == 1 else positions[-1] + 1
        for param in params[:end]:
            param.requires_grad = False
        self._freeze_batch_norms(self.model)
        return self

    @staticmethod
    def _freeze_batch_norms(module: nn.Module) -> None:
        for child_name, child in module.named_children():
            is_bn = isinstance(child, (nn.BatchNorm2d, nn.SyncBatchNorm))
            if is_bn and child.weight is not None and not child.weight.requires_grad:
                module.add_module(child_name, FrozenBatchNorm2d.convert_frozen_batchnorm(child))
            else:
                TimmBackbone._freeze_batch_norms(child)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[B, C, H, W]`` -> ``{name: [B, channels, H / stride, W / stride]}``."""
        checkpointing = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        if checkpointing and self._is_module_list():
            features = dict(zip(self._all_names, self._checkpointed_features(x)))
        else:
            features = dict(zip(self._all_names, self.model(x)))
        outputs = {name: features[name] for name in self._out_features}
        if self._channels_last_output:  # e.g. timm's Swin: NHWC feature maps
            outputs = {name: f.permute(0, 3, 1, 2) for name, f in outputs.items()}
        return outputs

    def _is_module_list(self) -> bool:
        from timm.models import FeatureDictNet  # FeatureListNet's base class

        return isinstance(self.model, FeatureDictNet)

    def _checkpointed_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """What timm's ``FeatureListNet`` returns, with the trainable parts checkpointed.

        The modules between two returned features form one segment: one checkpoint, or one per
        block when the segment is a single sequential stage. Called in training with autograd on.
        """
        features, segment = [], []
        for name, module in self.model.items():
            segment.append(module)
            if name not in self.model.return_layers:
                continue
            x = self._run_segment(segment, x)
            segment = []
            if isinstance(x, (tuple, list)):
                features.append(torch.cat(x, 1) if self.model.concat else x[0])
            else:
                features.append(x)
        return features

    @staticmethod
    def _run_segment(modules: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
        """Run ``modules`` in order; ``[B, C, H, W] -> [B, C', H', W']``."""
        if getattr(modules[0], "inplace", False) is True:
            x = modules[0](x)  # would overwrite the input the checkpoint keeps
            modules = modules[1:]
        if len(modules) == 1 and isinstance(modules[0], nn.Sequential):
            blocks = list(modules[0])
        else:
            blocks = [nn.Sequential(*modules)] if modules else []  # a container in training mode
        for block in blocks:
            x = maybe_checkpoint(True, block, x)
        return x
