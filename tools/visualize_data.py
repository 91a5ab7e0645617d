#!/usr/bin/env python
"""Draw training samples with their ground truth, to check data, labels and augmentations.

    python tools/visualize_data.py --config-file maskdino_r50_coco_instance_seg_50ep --output vis/ --num-images 16
    python tools/visualize_data.py --config-file my_config.py --source annotation --output vis/

``--source dataloader`` (default) draws what the model is trained on: ``dataloader.train`` with
its mapper and augmentations (instances: masks, boxes, classes; ``sem_seg`` maps).
``--source annotation`` draws the registered dataset records as they are, before any mapping.
Trailing ``key=value`` arguments override config values (``dataloader.train.total_batch_size=2``).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from detrex_ext.engine.predictor import add_model_arguments, load_config
from detrex_ext.utils.visualizer import Visualizer

logger = logging.getLogger("visualize_data")


def train_dataset_names(cfg: Any) -> list[str]:
    from detrex_ext.config import try_get_key

    names = try_get_key(cfg, "dataloader.train.dataset.names", "dataloader.train.dataset.name")
    if names is None:
        return []
    return [names] if isinstance(names, str) else list(names)


def mapped_samples(cfg: Any) -> Iterator[dict[str, Any]]:
    """Model inputs from ``dataloader.train``, one dict at a time (loaded in this process)."""
    from detrex_ext.config import instantiate

    loader_cfg = cfg.dataloader.train
    if "num_workers" in loader_cfg:
        loader_cfg.num_workers = 0  # a handful of samples: worker start-up would dominate
    for batch in instantiate(loader_cfg):
        yield from batch


def annotated_records(cfg: Any) -> Iterator[dict[str, Any]]:
    """Registered dataset records as drawable dicts: ``image`` (HWC RGB), ``instances``, ``sem_seg``."""
    from detrex_ext.data import get_detection_dataset_dicts
    from detrex_ext.data.detection_utils import annotations_to_instances, load_image, load_sem_seg

    for record in get_detection_dataset_dicts(train_dataset_names(cfg)):
        image = load_image(record, "RGB")
        sample: dict[str, Any] = {"image": image, "file_name": record.get("file_name", "")}
        annotations = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
        if annotations:
            sample["instances"] = annotations_to_instances(annotations, image.shape[:2], "bitmask")
        sem_seg = load_sem_seg(record)
        if sem_seg is not None:
            sample["sem_seg"] = sem_seg
        yield sample


def sample_image_rgb(sample: dict[str, Any], image_format: str) -> Any:
    """The sample's image in RGB order (model inputs are CHW in the mapper's ``image_format``)."""
    image = sample["image"]
    if image_format == "BGR":
        image = image.flip(0) if hasattr(image, "flip") else image[:, :, ::-1]
    return image


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(parser, device=False)
    parser.add_argument("--source", choices=["dataloader", "annotation"], default="dataloader")
    parser.add_argument("--output", type=Path, required=True, help="folder for the PNG files")
    parser.add_argument("--num-images", type=int, default=8)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from detrex_ext.config import try_get_key
    from detrex_ext.data import MetadataCatalog

    cfg = load_config(args.config_file, args.opts)
    names = train_dataset_names(cfg)
    metadata = MetadataCatalog.get(names[0]) if names else None
    if args.source == "dataloader":
        samples = mapped_samples(cfg)
        image_format = try_get_key(cfg, "dataloader.train.mapper.image_format", default="RGB")
    else:
        samples = annotated_records(cfg)
        image_format = "RGB"
    args.output.mkdir(parents=True, exist_ok=True)
    written = 0
    for index, sample in enumerate(itertools.islice(samples, args.num_images)):
        visualizer = Visualizer(sample_image_rgb(sample, image_format), metadata)
        visualizer.draw_dataset_dict(sample)
        stem = Path(str(sample.get("file_name") or "sample")).stem or "sample"
        destination = args.output / f"{index:04d}_{stem}.png"
        visualizer.save(str(destination))
        written += 1
        count = len(sample["instances"]) if "instances" in sample else 0
        logger.info(
            "%s (%d instances%s)", destination, count, ", sem_seg" if "sem_seg" in sample else ""
        )
    if written == 0:
        print("error: the dataset produced no samples", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
