#!/usr/bin/env python
"""Activation memory of one training forward, without and with ``model.activation_checkpointing``.

    python tools/activation_memory.py --config-file maskdino_r50_coco_instance_seg_50ep --size 256
    python tools/activation_memory.py --config-file maskdino_swinl_coco_instance_seg_50ep --size 256

Counts the bytes autograd keeps for the backward during one training forward (losses included)
of ``--batch`` synthetic images of ``--size`` pixels (random rectangle instances, the recipe of
``tools/benchmark.py``), per part of the model: each module that can checkpoint itself (backbone,
encoder layers, decoder layers) and the rest (pixel-decoder convolutions, prediction heads,
criterion); a storage counts once, for the first part that saves it, and parameters not at all.
Runs on CPU (or ``--device cuda``) in fp32; the saved bytes do not depend on the device. This is
not the peak (the backward recomputes one checkpointed block at a time on top of it): for a GPU's
peak memory run ``tools/benchmark.py`` with ``model.activation_checkpointing=True``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import torch
from tabulate import tabulate
from torch import nn

from detrex_ext.config import instantiate
from detrex_ext.engine.predictor import load_config
from detrex_ext.layers.activation_checkpointing import (
    checkpointable_modules,
    saved_activation_bytes,
    set_activation_checkpointing,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/ is not a package
from benchmark import synthetic_training_batch  # noqa: E402

REST = "rest (heads, pixel-decoder convs, criterion)"


def saved_bytes_by_part(model: nn.Module, batch: list[dict]) -> Counter:
    """Bytes of distinct storages saved for the backward, by the innermost part that saved them."""
    stack, handles = [REST], []
    for name, module in checkpointable_modules(model).items():
        handles.append(module.register_forward_pre_hook(lambda m, a, name=name: stack.append(name)))
        handles.append(module.register_forward_hook(lambda m, a, o: stack.pop() and None))
    torch.manual_seed(1)
    try:
        with saved_activation_bytes(model, part=lambda: stack[-1]) as saved:
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return saved["by_part"]


def measure(cfg, batch: list[dict], device: torch.device, enabled: bool) -> Counter:
    """Saved bytes by part of a freshly built model (same seed) with checkpointing ``enabled``."""
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device).train()
    set_activation_checkpointing(model, enabled)
    return saved_bytes_by_part(model, batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, help="config path or released model name")
    parser.add_argument("--size", type=int, default=256, help="square image size in pixels")
    parser.add_argument("--batch", type=int, default=2, help="images per batch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("opts", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    device = torch.device(args.device)
    batch = synthetic_training_batch(args.batch, args.size, int(cfg.model.num_classes), (12, 7))
    off, on = measure(cfg, batch, device, False), measure(cfg, batch, device, True)
    mib = 2.0**20
    rows = [
        (part, off[part] / mib, on[part] / mib, on[part] / off[part] if off[part] else 0.0)
        for part in sorted(off, key=off.get, reverse=True)
    ]
    total_off, total_on = sum(off.values()), sum(on.values())
    rows.append(("total", total_off / mib, total_on / mib, total_on / total_off))
    print(f"{args.config_file}: batch {args.batch} x {args.size} px, fp32, saved activation MiB")
    print(
        tabulate(
            rows, headers=["part", "off", "on", "on / off"], floatfmt=("", ".1f", ".1f", ".3f")
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
