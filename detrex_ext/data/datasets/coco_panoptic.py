"""COCO-format panoptic datasets (json + RGB-encoded PNGs), optionally with semantic PNGs."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from ..catalog import MetadataCatalog, register_dataset
from .builtin_meta import panoptic_metadata

logger = logging.getLogger(__name__)

__all__ = [
    "load_coco_panoptic_json",
    "register_coco_panoptic",
    "register_coco_panoptic_with_sem_seg",
]


def load_coco_panoptic_json(
    json_file: str,
    image_root: str,
    panoptic_root: str,
    sem_seg_root: str | None,
    metadata: Any,
) -> list[dict]:
    """Read a COCO panoptic json into dataset dicts.

    Returns:
        ``[{file_name, height, width, image_id, pan_seg_file_name, (sem_seg_file_name),
        segments_info}]`` where each segment has ``id``, ``category_id`` (contiguous, from the
        metadata's id maps), ``isthing``, ``iscrowd`` and the json's ``area`` / ``bbox``.
    """
    with open(json_file) as f:
        content = json.load(f)
    thing_map = metadata.get("thing_dataset_id_to_contiguous_id") or {}
    stuff_map = metadata.get("stuff_dataset_id_to_contiguous_id") or {}
    images = {image["id"]: image for image in content.get("images", [])}
    records = []
    for ann in content["annotations"]:
        image_id = ann["image_id"]
        image = images.get(image_id, {})
        image_file = image.get("file_name", os.path.splitext(ann["file_name"])[0] + ".jpg")
        segments = []
        for segment in ann["segments_info"]:
            segment = dict(segment)
            dataset_id = segment["category_id"]
            if dataset_id in thing_map:
                segment.update(category_id=thing_map[dataset_id], isthing=True)
            elif dataset_id in stuff_map:
                segment.update(category_id=stuff_map[dataset_id], isthing=False)
            else:
                raise KeyError(
                    f"segment {segment['id']} of image {image_id} in {json_file} has category "
                    f"{dataset_id}, which the metadata of this dataset does not know"
                )
            segments.append(segment)
        record = {
            "file_name": os.path.join(image_root, image_file),
            "image_id": image_id,
            "pan_seg_file_name": os.path.join(panoptic_root, ann["file_name"]),
            "segments_info": segments,
        }
        if "height" in image and "width" in image:
            record["height"], record["width"] = image["height"], image["width"]
        if sem_seg_root is not None:
            record["sem_seg_file_name"] = os.path.join(sem_seg_root, ann["file_name"])
        records.append(record)
    if not records:
        raise ValueError(f"No panoptic annotations found in {json_file}")
    records.sort(key=lambda r: r["image_id"])
    logger.info("Loaded %d panoptic images from %s", len(records), json_file)
    return records


def register_coco_panoptic(
    name: str,
    metadata: dict[str, Any],
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    instances_json: str | None = None,
) -> None:
    """Register a COCO-format panoptic dataset under ``name``.

    Args:
        metadata: class metadata; when it has no ``thing_classes``/``stuff_classes``, they are
            built from the json's categories (things first, then stuff; see
            ``panoptic_metadata``).
        image_root, panoptic_root: image folder and folder of the panoptic PNGs.
        panoptic_json: the panoptic json.
        instances_json: optional instances json of the same images (box/mask AP evaluation).
    """
    _register_panoptic(
        name, metadata, image_root, panoptic_root, panoptic_json, None, instances_json
    )


def register_coco_panoptic_with_sem_seg(
    name: str,
    metadata: dict[str, Any],
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: str,
    instances_json: str | None = None,
) -> None:
    """Like ``register_coco_panoptic``, plus semantic PNGs (``sem_seg_root``, one per panoptic
    PNG, values = contiguous ids of ``stuff_classes``, 255 = ignore) for ``SemSegEvaluator``.
    """
    _register_panoptic(
        name, metadata, image_root, panoptic_root, panoptic_json, sem_seg_root, instances_json
    )


def _register_panoptic(
    name: str,
    metadata: dict[str, Any],
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: str | None,
    instances_json: str | None,
) -> None:
    image_root, panoptic_root, panoptic_json = map(
        os.fspath, (image_root, panoptic_root, panoptic_json)
    )
    sem_seg_root = os.fspath(sem_seg_root) if sem_seg_root is not None else None
    metadata = dict(metadata)
    if "stuff_classes" not in metadata or "thing_classes" not in metadata:
        with open(panoptic_json) as f:
            categories = json.load(f)["categories"]
        metadata = {**panoptic_metadata(categories), **metadata}
    paths: dict[str, Any] = {
        "image_root": image_root,
        "panoptic_root": panoptic_root,
        "panoptic_json": panoptic_json,
        "evaluator_type": metadata.pop("evaluator_type", "coco_panoptic_seg"),
    }
    if sem_seg_root is not None:
        paths["sem_seg_root"] = sem_seg_root
    if instances_json is not None:
        paths["json_file"] = os.fspath(instances_json)

    def load() -> list[dict]:
        return load_coco_panoptic_json(
            panoptic_json, image_root, panoptic_root, sem_seg_root, MetadataCatalog.get(name)
        )

    register_dataset(name, load, {**metadata, **paths})
