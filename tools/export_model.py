#!/usr/bin/env python
"""Export a config with its weights to ONNX or to a torch.export program, and verify the file.

    python tools/export_model.py --config-file maskdino_r50_coco_instance_seg_50ep --format onnx --verify
    python tools/export_model.py --config-file my_config.py --weights output/model_final.pth \\
        --format torch_export --input-size 512 768 --output model.pt2 model.num_queries=100

``--config-file``: a released model name (its released weights by default), a config file or
``maskdino/<name>.py``; ``--weights``: a path, http(s) URL or released model name (none: random
initialisation, with a warning). The graph takes ``images``, uint8 ``[B, 3, H, W]`` RGB resized
and padded to ``--input-size`` (default: the config's test short edge by 1.5 times it, 800x1216
for COCO; multiples of 32), batch dynamic, and returns the final predictions (``--no-postprocess``:
the raw outputs). ``--msda`` picks the deformable-attention lowering (``grid_sample``, the
default; ``gather``: no GridSample, for TensorRT; ``op``: torch_export only, keeps the custom op).
``--verify`` compares the written file with the eager model on generated images (or
``--verify-images``, resized and padded as the ONNX runtime does) and prints the parity figures;
the exit status is 1 when a tolerance is missed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from detrex_ext.engine.predictor import add_model_arguments

logger = logging.getLogger("export_model")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(
        parser,
        weights="checkpoint path, http(s) URL or released model name (default: the released "
        "weights of a released name, else random initialisation)",
        device=False,
    )
    parser.add_argument("--format", choices=["onnx", "torch_export"], default="onnx")
    parser.add_argument("--output", type=Path, default=None, help="default: <config>.onnx/.pt2")
    parser.add_argument("--opset", type=int, choices=[17, 18, 19, 20], default=18)
    parser.add_argument(
        "--msda",
        choices=["grid_sample", "gather", "op"],
        default="grid_sample",
        help="deformable-attention lowering (op: torch_export only, keeps the custom op)",
    )
    parser.add_argument(
        "--input-size", type=int, nargs=2, metavar=("H", "W"), default=None, help="graph input"
    )
    parser.add_argument(
        "--no-postprocess",
        dest="postprocess",
        action="store_false",
        help="return the raw pred_logits, pred_boxes, pred_masks instead of final predictions",
    )
    parser.add_argument(
        "--mask-format",
        choices=["logits", "prob", "binary"],
        default="logits",
        help="instance masks as logits (mask = logit > 0; the default), probabilities, or "
        "thresholded (bool, 4x smaller)",
    )
    parser.add_argument("--verify", action="store_true", help="check the file against eager")
    parser.add_argument(
        "--verify-images", nargs="+", default=None, help="images for --verify (default: generated)"
    )
    parser.add_argument(
        "--eval",
        action="store_true",
        help="also score the eager model and the file on the config's test set (its loader and "
        "evaluator) and print both and the differences",
    )
    parser.add_argument(
        "--optimize",
        choices=["fast", "full", "none"],
        default="fast",
        help="ONNX graph optimisation (full adds the onnxscript rewriter: slower export)",
    )
    return parser


def print_accuracy(eager: dict, exported: dict) -> None:
    """The metrics of both runs side by side, with the difference."""
    print(f"  {'metric':<28} {'eager':>8} {'exported':>9} {'delta':>8}")
    for task, metrics in eager.items():
        for name, value in metrics.items():
            other = exported.get(task, {}).get(name)
            if isinstance(value, (int, float)) and isinstance(other, (int, float)):
                line = f"  {task + '/' + name:<28} {value:>8.2f} {other:>9.2f}"
                print(f"{line} {other - value:>+8.2f}")


def _verification_images(paths: list[str] | None, metadata: dict) -> np.ndarray | None:
    if not paths:
        return None
    from detrex_ext.export.image_ops import prepare_image
    from detrex_ext.utils.image_io import load_image_rgb

    return np.stack([prepare_image(load_image_rgb(p), metadata["input"])[0] for p in paths])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.msda == "op" and args.format == "onnx":
        print("error: --msda op keeps the custom op, which ONNX lacks: use grid_sample or gather")
        return 2
    from detrex_ext.export.api import export_model
    from detrex_ext.export.verify import verify_export

    try:
        result = export_model(
            args.config_file,
            args.weights,
            args.output,
            fmt=args.format,
            opset=args.opset,
            msda=None if args.msda == "op" else args.msda,
            input_size=args.input_size,
            postprocess=args.postprocess,
            mask_format=args.mask_format,
            optimize=args.optimize,
            overrides=args.opts,
        )
    except (ValueError, ImportError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    meta = result.metadata
    size_mb = result.path.stat().st_size / 1e6
    print(
        f"wrote {result.path} ({size_mb:.1f} MB): {meta['format']}, input images uint8 "
        f"[B, 3, {meta['input']['height']}, {meta['input']['width']}], outputs "
        f"{', '.join(meta['outputs']['names'])}"
    )
    status = 0
    if args.verify:
        try:
            images = _verification_images(args.verify_images, meta)
        except (ValueError, OSError) as error:
            print(f"error: --verify-images: {error}", file=sys.stderr)
            return 2
        report = verify_export(result.adapter, result.path, images)
        print(report.format())
        status = 0 if report.ok else 1
    if args.eval:
        from detrex_ext.export.evaluation import compare_accuracy

        eager, exported = compare_accuracy(result.config, result.model, result.path)
        print(f"accuracy on the config's test set, eager vs {result.path.name}:")
        print_accuracy(eager, exported)
    return status


if __name__ == "__main__":
    sys.exit(main())
