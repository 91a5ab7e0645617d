#!/usr/bin/env python
"""Convert checkpoints into this project's Mask DINO layout.

Usage::

    python tools/convert_checkpoint.py official IN.pth OUT.pth

`official`: a released IDEA-Research/MaskDINO checkpoint (or a detrex one). Our module names are the
official ones, so the conversion unwraps the container (`{"model": ...}` or a bare state_dict,
optional DDP `module.` prefix), writes every alias of the shared box MLP and decoder norm, drops the
non-persistent `pixel_mean` / `pixel_std`, and saves `{"model": state_dict}` (loadable with
`train.init_checkpoint=OUT.pth`). The input is read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch

from detrex_projects.maskdino.modeling.checkpoint import adapt_checkpoint_state_dict


def convert_official(src: str, dst: str) -> dict:
    """Read an official checkpoint from `src`, write the converted one to `dst` atomically."""
    checkpoint = torch.load(src, map_location="cpu", weights_only=True)
    state_dict = adapt_checkpoint_state_dict(checkpoint)
    if not any(".predictor." in k for k in state_dict):
        raise ValueError(
            f"{src} does not look like a Mask DINO checkpoint (no '*.predictor.*' keys)"
        )
    folder = os.path.dirname(os.path.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"model": state_dict}, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return state_dict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("format", choices=["official"], help="layout of the input checkpoint")
    parser.add_argument("input", help="checkpoint to read (.pth)")
    parser.add_argument("output", help="converted checkpoint to write (.pth)")
    args = parser.parse_args(argv)
    state_dict = convert_official(args.input, args.output)
    print(f"wrote {len(state_dict)} entries to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
