"""Semantic segmentation datasets: image folder + label-PNG folder (ADE20K, Cityscapes, custom)."""

from __future__ import annotations

import glob
import logging
import os
from typing import Any

from ..catalog import register_dataset
from .builtin_meta import ade20k_semantic_metadata, cityscapes_semantic_metadata

logger = logging.getLogger(__name__)

__all__ = [
    "load_cityscapes_semantic",
    "load_sem_seg",
    "register_ade20k_semantic",
    "register_cityscapes_semantic",
    "register_sem_seg",
]


def load_sem_seg(
    gt_root: str, image_root: str, gt_ext: str = "png", image_ext: str = "jpg"
) -> list[dict]:
    """Pair every label file in ``gt_root`` with the image of the same stem in ``image_root``.

    Returns:
        ``[{file_name, sem_seg_file_name, image_id}]`` sorted by file name (height and width
        are filled in by the mapper when it reads the image).
    """
    labels = sorted(glob.glob(os.path.join(gt_root, f"**/*.{gt_ext}"), recursive=True))
    if not labels:
        raise FileNotFoundError(f"no *.{gt_ext} label files found under {gt_root}")
    records = []
    missing = 0
    for label in labels:
        relative = os.path.relpath(label, gt_root)
        image = os.path.join(image_root, os.path.splitext(relative)[0] + f".{image_ext}")
        if not os.path.isfile(image):
            missing += 1
            continue
        stem = os.path.splitext(os.path.basename(relative))[0]
        records.append({"file_name": image, "sem_seg_file_name": label, "image_id": stem})
    if missing:
        logger.warning("%d label files under %s have no image in %s", missing, gt_root, image_root)
    if not records:
        raise FileNotFoundError(f"no image in {image_root} matches the labels in {gt_root}")
    logger.info("Loaded %d images with semantic labels from %s", len(records), image_root)
    return records


def register_sem_seg(
    name: str,
    metadata: dict[str, Any],
    image_root: str,
    sem_seg_root: str,
    image_ext: str = "jpg",
    gt_ext: str = "png",
) -> None:
    """Register a semantic-segmentation dataset (``metadata`` needs ``stuff_classes``)."""
    if "stuff_classes" not in metadata:
        raise ValueError(f"metadata of semantic dataset {name!r} needs 'stuff_classes'")
    image_root, sem_seg_root = os.fspath(image_root), os.fspath(sem_seg_root)
    metadata = {"ignore_label": 255, "evaluator_type": "sem_seg", **metadata}
    register_dataset(
        name,
        lambda: load_sem_seg(sem_seg_root, image_root, gt_ext, image_ext),
        {**metadata, "image_root": image_root, "sem_seg_root": sem_seg_root},
    )


def register_ade20k_semantic(name: str, image_root: str, sem_seg_root: str) -> None:
    """Register ADE20K-150 (labels shifted to 0..149 with 255 = ignore, i.e. the
    ``annotations_detectron2`` folder made by ``prepare_ade20k_sem_seg.py``)."""
    register_sem_seg(name, ade20k_semantic_metadata(), image_root, sem_seg_root, "jpg", "png")


def load_cityscapes_semantic(image_dir: str, gt_dir: str) -> list[dict]:
    """Pair ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
    ``gtFine/<split>/<city>/*_gtFine_labelTrainIds.png`` (made by cityscapesscripts)."""
    images = sorted(glob.glob(os.path.join(image_dir, "*", "*_leftImg8bit.png")))
    if not images:
        raise FileNotFoundError(f"no *_leftImg8bit.png images found under {image_dir}")
    records = []
    for image in images:
        city = os.path.basename(os.path.dirname(image))
        stem = os.path.basename(image)[: -len("_leftImg8bit.png")]
        label = os.path.join(gt_dir, city, f"{stem}_gtFine_labelTrainIds.png")
        if not os.path.isfile(label):
            raise FileNotFoundError(
                f"{label} is missing: create the *_labelTrainIds.png files with "
                "cityscapesscripts/preparation/createTrainIdLabelImgs.py"
            )
        records.append({"file_name": image, "sem_seg_file_name": label, "image_id": stem})
    return records


def register_cityscapes_semantic(name: str, image_dir: str, gt_dir: str) -> None:
    """Register a Cityscapes split for semantic segmentation on the 19 train ids."""
    image_dir, gt_dir = os.fspath(image_dir), os.fspath(gt_dir)
    metadata = {**cityscapes_semantic_metadata(), "evaluator_type": "sem_seg"}
    register_dataset(
        name,
        lambda: load_cityscapes_semantic(image_dir, gt_dir),
        {**metadata, "image_root": image_dir, "sem_seg_root": gt_dir},
    )
