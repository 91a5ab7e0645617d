"""Command-line arguments the tools share (argparse only: tools that run without PyTorch, such as
``tools/demo.py --onnx``, use them too)."""

from __future__ import annotations

import argparse

__all__ = ["add_model_arguments"]


def add_model_arguments(
    parser: argparse.ArgumentParser,
    *,
    weights: str | None = None,
    device: bool = True,
    config_required: bool = True,
) -> None:
    """The command-line arguments the tools share: ``--config-file``, ``--weights`` (when
    ``weights`` gives its help text), ``--device`` and trailing ``key=value`` overrides (``opts``).
    ``config_required=False`` lets a tool accept another model source (``demo.py --onnx``).
    """
    parser.add_argument(
        "--config-file",
        required=config_required,
        default=None,
        help="config file, released model name, or maskdino/<name>.py",
    )
    if weights is not None:
        parser.add_argument("--weights", default=None, help=weights)
    if device:
        parser.add_argument(
            "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)"
        )
    parser.add_argument("opts", nargs="*", default=[], help="config overrides, key=value")
