#!/usr/bin/env python
"""Run a model on images and save pictures of its predictions.

    python tools/demo.py --config-file maskdino_r50_coco_instance_seg_50ep \\
        --input street.jpg more_images/ --output out/ --score-thresh 0.3
    python tools/demo.py --config-file my_config.py --weights output/model_final.pth \\
        --input a.jpg b.jpg --output out/ model.num_queries=100

``--config-file``: a lazy config file, a released model name (then ``--weights`` defaults to its
released checkpoint) or a packaged path such as ``maskdino/<name>.py``. ``--weights``: a path, an
http(s) URL or a released model name. Trailing ``key=value`` arguments override config values.
Each input image gives ``<output>/<image name>.png`` (``--output x.png`` with a single input writes
that file); ``--save-json`` also writes the instances as ``<image name>.json``.

Inputs are checked before the model loads: a file given by name that is not an image (or is
empty) stops the run with one ``error:`` line; in a folder, files that cannot be read are listed at
the end while the others are processed (the exit status is then 1). URLs are not read: download
the image first.

``--onnx model.onnx`` runs a file written by ``tools/export_model.py`` with ONNX Runtime instead
(PyTorch is not imported; the file carries its classes, input size and thresholds, so
``--config-file`` is optional and, when given, must be the config the file was exported from).
"""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning when the machine is busy at start (see
# detrex_ext.utils.openmp); only takes effect before torch is loaded. torch-free import.
from detrex_ext.utils.openmp import set_wait_policy_for_load  # noqa: E402

set_wait_policy_for_load()

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path

from detrex_ext.utils.cli import add_model_arguments
from detrex_ext.utils.image_io import UnreadableImageError, check_image_file, load_image_rgb
from detrex_ext.utils.visualizer import Visualizer

logger = logging.getLogger("demo")

AMP_CHOICES = ("bf16", "fp16")  # detrex_ext.engine.predictor.AMP_DTYPES (imports torch)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
_OVERRIDE = re.compile(r"^[~+]*[A-Za-z_][\w.\[\]-]*(=|$)")


def split_inputs_and_overrides(items: list[str]) -> tuple[list[Path], list[str]]:
    """``--input`` values that are not existing paths but look like ``key=value`` are overrides."""
    inputs, overrides = [], []
    for item in items:
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", item):
            raise FileNotFoundError(
                f"input {item!r} is a URL; URLs are not read: download the image first "
                "(e.g. curl -O <url>) and pass the file"
            )
        path = Path(os.path.expanduser(item))  # "~key" (a deletion) is no "~user" path
        if path.exists():
            inputs.append(path)
        elif _OVERRIDE.match(item) and ("=" in item or item.startswith("~")):  # key=v, ~key
            overrides.append(item)
        else:
            raise FileNotFoundError(f"input {item!r} does not exist")
    return inputs, overrides


def expand_inputs(paths: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files from files and folders (folders: their images, sorted, not recursive),
    checked without decoding their pixels.

    Returns:
        ``(images, unreadable)``: the readable images, and ``(path, reason)`` of the image files
        found in folders that are not readable.

    Raises:
        UnreadableImageError: a file given by name is not an image.
    """
    images: list[Path] = []
    unreadable: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                logger.warning(
                    "folder %s holds no images (%s)", path, ", ".join(sorted(IMAGE_SUFFIXES))
                )
            for image in found:
                try:
                    check_image_file(image)
                except (UnreadableImageError, OSError) as e:
                    unreadable.append((image, str(e)))
                else:
                    images.append(image)
        else:
            check_image_file(path)
            images.append(path)
    return images, unreadable


def instances_to_json(instances) -> list[dict]:
    """Boxes (xyxy, pixels), scores and classes of predicted instances, for ``--save-json``."""
    fields = instances.get_fields()
    count = len(instances)
    boxes = fields.get("pred_boxes")
    boxes = getattr(boxes, "tensor", boxes).tolist() if boxes is not None else [None] * count
    scores = fields["scores"].tolist() if "scores" in fields else [None] * count
    classes = fields["pred_classes"].tolist() if "pred_classes" in fields else [None] * count
    return [
        {"box_xyxy": box, "score": score, "class_id": label}
        for box, score, label in zip(boxes, scores, classes)
    ]


def output_path(output: Path, image: Path, single: bool) -> Path:
    if single and output.suffix.lower() == ".png":
        output.parent.mkdir(parents=True, exist_ok=True)
        return output
    output.mkdir(parents=True, exist_ok=True)
    return output / f"{image.stem}.png"


def _unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be an integer >= 1, got {text} (leave --top-k out to draw every instance)"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(
        parser,
        weights="checkpoint path, http(s) URL or released model name",
        config_required=False,
    )
    parser.add_argument(
        "--onnx",
        type=Path,
        default=None,
        help="run this exported ONNX file with ONNX Runtime (no PyTorch) instead of the config",
    )
    parser.add_argument("--input", nargs="+", required=True, help="images and/or folders of images")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("demo_output"),
        help="folder (or .png file for one input)",
    )
    parser.add_argument(
        "--score-thresh",
        type=_unit_interval,
        default=0.3,
        help="hide instances scoring below this (0 to 1)",
    )
    parser.add_argument(
        "--top-k",
        type=_positive_int,
        default=None,
        help="draw at most this many instances per image (>= 1; default: all)",
    )
    parser.add_argument(
        "--amp", choices=AMP_CHOICES, default=None, help="run the model under autocast"
    )
    parser.add_argument("--alpha", type=_unit_interval, default=0.5, help="mask opacity (0 to 1)")
    parser.add_argument("--no-boxes", action="store_true", help="draw masks only")
    parser.add_argument("--no-masks", action="store_true", help="draw boxes only")
    parser.add_argument("--save-json", action="store_true", help="also write the instances as JSON")
    return parser


def onnx_predictor(args: argparse.Namespace, overrides: list[str]):
    """``--onnx``: the PyTorch-free predictor of the exported file, and its drawing metadata."""
    given = [
        flag
        for flag, value in (
            ("--weights", args.weights),
            ("--device", args.device),
            ("--amp", args.amp),
            ("config overrides", overrides),
        )
        if value
    ]
    if given:
        raise ValueError(
            f"--onnx runs the exported file as it is: {', '.join(given)} cannot apply (export "
            "again with tools/export_model.py to change the weights or the config)"
        )
    from detrex_ext.export import OnnxPredictor

    predictor = OnnxPredictor(
        args.onnx, config=args.config_file, score_threshold=args.score_thresh, top_k=args.top_k
    )
    return predictor, predictor.class_metadata


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config_file is None and args.onnx is None:
        parser.error("--config-file is required (or --onnx with an exported model)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        inputs, overrides = split_inputs_and_overrides(args.input)
        images, failures = expand_inputs(inputs)
    except (FileNotFoundError, UnreadableImageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not images:
        print("error: no readable input images found", file=sys.stderr)
        _report_failures(failures, 0)
        return 1
    if args.onnx is not None:
        try:
            predictor, metadata = onnx_predictor(args, [*overrides, *args.opts])
        except (ValueError, ImportError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    else:
        from detrex_ext.engine.predictor import Predictor

        predictor = Predictor.from_config(
            args.config_file,
            args.weights,
            overrides=[*overrides, *args.opts],
            device=args.device,
            score_threshold=args.score_thresh,
            top_k=args.top_k,
            amp=args.amp,
        )
        metadata = predictor.metadata
    for image_path in images:
        try:
            image = load_image_rgb(image_path)
        except (UnreadableImageError, OSError) as error:  # damaged beyond its header
            logger.error("%s", error)
            failures.append((image_path, str(error)))
            continue
        start = time.perf_counter()
        outputs = predictor(image)
        seconds = time.perf_counter() - start
        visualizer = Visualizer(image, metadata, alpha=args.alpha)
        instances = outputs.get("instances")
        if hasattr(instances, "to"):  # PyTorch Instances
            instances = instances.to("cpu")
        if "panoptic_seg" in outputs:  # the most complete picture when a model gives several
            visualizer.draw_panoptic_seg(*outputs["panoptic_seg"])
        elif instances is not None:
            visualizer.draw_instances(
                instances, show_masks=not args.no_masks, show_boxes=not args.no_boxes
            )
        elif "sem_seg" in outputs:
            visualizer.draw_sem_seg(outputs["sem_seg"])
        destination = output_path(args.output, image_path, single=len(images) == 1)
        visualizer.save(str(destination))
        if args.save_json and instances is not None:
            destination.with_suffix(".json").write_text(json.dumps(instances_to_json(instances)))
        found = f", {len(instances)} instances" if instances is not None else ""
        logger.info("%s -> %s (%.2f s%s)", image_path, destination, seconds, found)
    if failures:
        _report_failures(failures, len(images) - len([f for f in failures if f[0] in images]))
        return 1
    return 0


def _report_failures(failures: list[tuple[Path, str]], processed: int) -> None:
    if not failures:
        return
    lines = "\n".join(f"  {path}: {reason}" for path, reason in failures)
    print(
        f"error: {len(failures)} image(s) could not be read ({processed} processed):\n{lines}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    sys.exit(main())
