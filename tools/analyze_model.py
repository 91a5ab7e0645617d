#!/usr/bin/env python
"""Parameters per module, FLOPs (fvcore) and the module tree of a config's model.

    python tools/analyze_model.py --config-file maskdino_r50_coco_instance_seg_50ep --tasks parameter flop
    python tools/analyze_model.py --config-file my_config.py --tasks flop --height 512 --width 512 --depth 3

FLOPs are counted by fvcore on one inference pass over a ``--height`` x ``--width`` image (or the
``--input`` images after the config's test-time resize, averaged), in fvcore's convention of one
FLOP per multiply-add, as detectron2's ``analyze_model.py`` reports them. Multi-scale deformable
attention sampling (``detrex_ext::ms_deform_attn``) is counted by our own rule (4 bilinear taps
plus one attention weight per sampled value: 5 multiply-adds per point and channel) and also shown
separately, because the official numbers leave the compiled op out.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections import Counter
from typing import Any

import numpy as np
import torch
from tabulate import tabulate

from detrex_ext.engine.predictor import (
    add_model_arguments,
    build_model,
    inference_augmentations,
    load_config,
    model_input,
    released_model_name,
)

logger = logging.getLogger("analyze_model")

MSDA_OP = "detrex_ext::ms_deform_attn"


def msda_flop_handle(inputs: list[Any], outputs: list[Any]) -> Counter:
    """fvcore handle: value [B, S, H, Dh], sampling_locations [B, Q, H, L, P, 2] -> 5 B Q H L P Dh."""
    from fvcore.nn.jit_handles import get_shape

    value_shape = get_shape(inputs[0])
    locations_shape = get_shape(inputs[3])
    head_dim = value_shape[3]
    batch, queries, heads, levels, points = locations_shape[:5]
    return Counter({MSDA_OP: 5 * batch * queries * heads * levels * points * head_dim})


def flatten_tensors(outputs: Any) -> list[torch.Tensor]:
    """Every tensor in a model output (dicts, lists, tuples, Instances, Boxes), in a fixed order."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        return [t for key in sorted(outputs) for t in flatten_tensors(outputs[key])]
    if isinstance(outputs, (list, tuple)):
        return [t for item in outputs for t in flatten_tensors(item)]
    if hasattr(outputs, "get_fields"):
        return flatten_tensors(outputs.get_fields())
    if hasattr(outputs, "tensor") and isinstance(outputs.tensor, torch.Tensor):
        return [outputs.tensor]
    return []


class TensorInTensorsOut(torch.nn.Module):
    """Wraps a detectron2-style model so that tracing sees one image tensor in, tensors out."""

    def __init__(self, model: torch.nn.Module, height: int, width: int):
        super().__init__()
        self.model = model
        self.height, self.width = height, width

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model([{"image": image, "height": self.height, "width": self.width}])
        return tuple(flatten_tensors(outputs))


def count_flops(
    model: torch.nn.Module, images: list[torch.Tensor], sizes: list[tuple[int, int]], depth: int
) -> dict[str, Any]:
    """Average fvcore FLOPs over the images; a per-module table of the first image."""
    from fvcore.nn import FlopCountAnalysis, flop_count_table

    totals, msda, unsupported, table = [], [], Counter(), ""
    for image, (height, width) in zip(images, sizes):
        wrapper = TensorInTensorsOut(model, height, width).eval()
        analysis = FlopCountAnalysis(wrapper, (image,))
        analysis.set_op_handle(MSDA_OP, msda_flop_handle)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python values in the graph
            totals.append(analysis.total())
            msda.append(analysis.by_operator().get(MSDA_OP, 0))
            unsupported.update(analysis.unsupported_ops())
            if not table:
                table = flop_count_table(analysis, max_depth=depth, show_param_shapes=False)
    return {
        "gflops": float(np.mean(totals)) / 1e9,
        "msda_gflops": float(np.mean(msda)) / 1e9,
        "unsupported_ops": dict(unsupported.most_common()),
        "table": table,
        "images": len(images),
    }


def analysis_inputs(
    args: argparse.Namespace, cfg: Any
) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
    """CHW uint8 tensors to analyse: the --input images resized as for testing, or one blank image."""
    if not args.input:
        image = torch.zeros(3, args.height, args.width, dtype=torch.uint8)
        return [image], [(args.height, args.width)]
    augmentations = inference_augmentations(cfg)
    inputs = [model_input(path, augmentations) for path in args.input]
    return [x["image"] for x in inputs], [(x["height"], x["width"]) for x in inputs]


def parameter_report(model: torch.nn.Module, depth: int) -> str:
    from fvcore.nn import parameter_count_table

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"parameters: {total:,} ({trainable:,} trainable)\n" + parameter_count_table(
        model, max_depth=depth
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(parser, weights="optional checkpoint (FLOPs do not depend on it)")
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=["parameter", "flop", "structure"],
        default=["parameter", "flop"],
    )
    parser.add_argument(
        "--height", type=int, default=800, help="image height for FLOPs without --input"
    )
    parser.add_argument(
        "--width", type=int, default=1216, help="image width for FLOPs without --input"
    )
    parser.add_argument(
        "--input", nargs="*", default=[], help="images to average FLOPs over (test-time resized)"
    )
    parser.add_argument("--depth", type=int, default=3, help="module depth of the tables")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config_file, args.opts)
    weights = args.weights
    if weights is None and released_model_name(args.config_file):
        logger.info("analysing the architecture only: released weights are not downloaded")
    model = build_model(cfg, weights, args.device or "cpu")
    if "parameter" in args.tasks:
        print(parameter_report(model, args.depth))
    if "flop" in args.tasks:
        images, sizes = analysis_inputs(args, cfg)
        images = [image.to(args.device or "cpu") for image in images]
        result = count_flops(model, images, sizes, args.depth)
        shapes = ", ".join(f"{tuple(i.shape[-2:])}" for i in images[:3])
        print(
            f"\nFLOPs (fvcore, multiply-adds) averaged over {result['images']} image(s), model input "
            f"{shapes}{'...' if len(images) > 3 else ''}:\n"
            f"  total {result['gflops']:.4g} G; deformable-attention sampling "
            f"{result['msda_gflops']:.4g} G; without it {result['gflops'] - result['msda_gflops']:.4g} G"
        )
        if result["unsupported_ops"]:
            rows = list(result["unsupported_ops"].items())[:12]
            print("operators not counted (fvcore has no rule for them):")
            print(tabulate(rows, headers=["operator", "calls"]))
        print(result["table"])
    if "structure" in args.tasks:
        print(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
