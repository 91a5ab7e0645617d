"""Exponential moving average (EMA) of model weights, as in detrex (from d2go).

``EMAState`` holds a copy of every parameter and buffer; ``EMAHook`` updates it after each
optimizer step with ``ema = decay * ema + (1 - decay) * weight`` (float tensors; other buffers
are copied). The state is attached to the unwrapped model as ``model.ema_state`` and checkpointed
under ``"ema_state"``, so ``--resume`` restores it.

Differences from detrex: the EMA device falls back to the model's device when
``train.model_ema.device`` is empty (detrex reads ``model.device``, which most configs lack), and
the hook's "is training" guard actually tests ``model.training``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from detrex_ext.config import try_get_key

from .ddp import unwrap_model as _unwrap
from .train_loop import HookBase

__all__ = [
    "EMAState",
    "EMAUpdater",
    "EMAHook",
    "may_build_model_ema",
    "may_get_ema_checkpointer",
    "get_model_ema_state",
    "apply_model_ema",
    "apply_model_ema_and_restore",
]

logger = logging.getLogger(__name__)


def _named_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Parameters then buffers (including non-persistent ones), shared tensors once."""
    yield from model.named_parameters()
    yield from model.named_buffers()


class EMAState:
    """A name -> tensor copy of a model's parameters and buffers."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}

    @classmethod
    def from_model(cls, model: nn.Module, device: str | torch.device | None = None) -> EMAState:
        state = cls()
        state.save_from(model, device)
        return state

    def save_from(self, model: nn.Module, device: str | torch.device | None = None) -> None:
        """Copy the current weights of ``model`` (to ``device`` if given)."""
        with torch.no_grad():
            self.state = {
                name: tensor.detach().to(device, copy=True)
                for name, tensor in _named_tensors(_unwrap(model))
            }

    def apply_to(self, model: nn.Module) -> None:
        """Copy the EMA weights into ``model`` (in place, keeping each tensor's device/dtype)."""
        with torch.no_grad():
            for name, tensor in _named_tensors(_unwrap(model)):
                if name not in self.state:
                    raise KeyError(f"EMA state has no entry for {name!r}")
                tensor.copy_(self.state[name])

    def has_inited(self) -> bool:
        return bool(self.state)

    def to(self, device: str | torch.device) -> EMAState:
        self.state = {name: tensor.to(device) for name, tensor in self.state.items()}
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.state

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        missing = set(self.state) - set(state_dict)
        if strict and self.state and missing:
            raise KeyError(f"EMA checkpoint state lacks {sorted(missing)[:5]} ...")
        self.state = dict(state_dict)

    def __repr__(self) -> str:
        return f"EMAState({len(self.state)} tensors)"


class EMAUpdater:
    """In-place update ``ema = decay * ema + (1 - decay) * model`` over all float tensors."""

    def __init__(self, state: EMAState, decay: float = 0.999, device: str | None = None) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.state = state
        self.decay = decay
        self.device = device or None

    def init_state(self, model: nn.Module) -> None:
        self.state.save_from(model, self.device)

    def update(self, model: nn.Module) -> None:
        with torch.no_grad():
            ema_floats, model_floats = [], []
            for name, tensor in _named_tensors(_unwrap(model)):
                ema_tensor = self.state.state[name]
                value = tensor.detach().to(ema_tensor.device)
                if ema_tensor.is_floating_point():
                    ema_floats.append(ema_tensor)
                    model_floats.append(value)
                else:
                    ema_tensor.copy_(value)
            if ema_floats:
                torch._foreach_mul_(ema_floats, self.decay)
                torch._foreach_add_(ema_floats, model_floats, alpha=1.0 - self.decay)


def get_model_ema_state(model: nn.Module) -> EMAState:
    """The ``EMAState`` attached by ``may_build_model_ema``."""
    return _unwrap(model).ema_state


def may_build_model_ema(cfg: Any, model: nn.Module) -> None:
    """Attach an empty ``EMAState`` as ``model.ema_state`` when ``train.model_ema.enabled``."""
    if not try_get_key(cfg, "train.model_ema.enabled", default=False):
        return
    model = _unwrap(model)
    if hasattr(model, "ema_state"):
        raise RuntimeError("The model already has an 'ema_state' attribute")
    model.ema_state = EMAState()
    logger.info("Using model EMA.")


def may_get_ema_checkpointer(cfg: Any, model: nn.Module) -> dict[str, EMAState]:
    """``{"ema_state": state}`` to pass as a checkpointable when EMA is enabled, else ``{}``."""
    if not try_get_key(cfg, "train.model_ema.enabled", default=False):
        return {}
    return {"ema_state": get_model_ema_state(model)}


def apply_model_ema(model: nn.Module, state: EMAState | None = None) -> None:
    """Overwrite the model's weights with the EMA weights."""
    (state or get_model_ema_state(model)).apply_to(model)


@contextlib.contextmanager
def apply_model_ema_and_restore(
    model: nn.Module, state: EMAState | None = None
) -> Iterator[nn.Module]:
    """Evaluate with EMA weights inside the block; the training weights come back after it."""
    state = state or get_model_ema_state(model)
    backup = EMAState.from_model(model)
    state.apply_to(model)
    try:
        yield model
    finally:
        backup.apply_to(model)


class EMAHook(HookBase):
    """Initialise the EMA at the start of training, update it after every iteration.

    Args:
        model: the (possibly DDP-wrapped) model carrying ``ema_state``.
        decay: EMA decay per iteration.
        device: where the EMA copy lives (e.g. ``"cpu"`` to save GPU memory); empty means the
            model's own device.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, device: str = "") -> None:
        self.model = _unwrap(model)
        self.state = get_model_ema_state(model)
        self.updater = EMAUpdater(self.state, decay=decay, device=device or None)
        self.device = device or None

    def before_train(self) -> None:
        if self.state.has_inited():
            # loaded from a checkpoint (on CPU): move it next to where updates happen
            if self.device is not None:
                self.state.to(self.device)
            else:
                self.state.state = {
                    name: self.state.state[name].to(tensor.device)
                    for name, tensor in _named_tensors(self.model)
                }
        else:
            self.updater.init_state(self.model)

    def after_step(self) -> None:
        if self.model.training:
            self.updater.update(self.model)
