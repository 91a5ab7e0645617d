"""Launcher, trainer and hooks (detectron2/detrex engine names).

``tools/train_net.py`` is a thin command line over ``runner.main``; library users can assemble
their own loop from ``Trainer`` (or detectron2's ``SimpleTrainer`` / ``AMPTrainer``), the hooks and
``DetectionCheckpointer``.
"""

from . import hooks
from .arguments import default_argument_parser
from .ddp import create_ddp_model, unwrap_model
from .defaults import default_setup, default_writers
from .launch import launch
from .simple_trainer import AMPTrainer, SimpleTrainer
from .train_loop import HookBase, Trainer, TrainerBase

__all__ = [
    "hooks",
    "default_argument_parser",
    "default_setup",
    "default_writers",
    "create_ddp_model",
    "unwrap_model",
    "launch",
    "HookBase",
    "TrainerBase",
    "Trainer",
    "SimpleTrainer",
    "AMPTrainer",
]
