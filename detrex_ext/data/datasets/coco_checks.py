"""Checks of a COCO instances json and of the images it lists, each problem refused with its
count, an example and the fix (see ``load_coco_json``)."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "COCOFormatError",
    "check_annotations",
    "check_image_files",
    "checked_categories",
    "read_coco_json",
]

_MAX_SHOWN = 3


class COCOFormatError(ValueError):
    """A COCO json (or the images it lists) that cannot be used as it is; the message names the
    file, what is wrong and what to do."""


def read_coco_json(json_file: str) -> dict:
    """The json's content, checked to be a COCO instances file (images, annotations,
    categories)."""
    try:
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO json {json_file} does not exist") from None
    except json.JSONDecodeError as e:
        raise COCOFormatError(
            f"{json_file} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
            "fix or regenerate the file"
        ) from None
    except UnicodeDecodeError as e:
        raise COCOFormatError(f"{json_file} is not a UTF-8 text file ({e})") from None
    keys = ("images", "annotations", "categories")
    if not isinstance(data, dict) or any(k not in data for k in keys):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise COCOFormatError(
            f"{json_file} is not a COCO instances json: it needs the keys {', '.join(keys)} "
            f"(found: {found})"
        )
    return data


def checked_categories(categories: list, json_file: str) -> list[dict]:
    """The categories, refusing entries without id/name and ids used twice (which would shift
    every class name after the duplicate)."""
    bad = [c for c in categories if not isinstance(c, dict) or "id" not in c or "name" not in c]
    if bad:
        raise COCOFormatError(
            f"{json_file}: {len(bad)} categories lack an 'id' or a 'name', e.g. {bad[0]!r}"
        )
    by_id: dict[Any, list[str]] = {}
    for category in categories:
        by_id.setdefault(category["id"], []).append(category["name"])
    duplicates = {i: names for i, names in by_id.items() if len(names) > 1}
    if duplicates:
        listing = "; ".join(
            f"id {i}: {', '.join(repr(n) for n in names)}"
            for i, names in sorted(duplicates.items())
        )
        raise COCOFormatError(
            f"{json_file} has categories that share an id ({listing}). Every category needs "
            "its own id (and every annotation the id of its category): fix the json's "
            "'categories'"
        )
    return categories


def check_annotations(data: dict, json_file: str, require_masks: bool) -> None:
    """Refuse annotations without the keys every use needs (or, with ``require_masks``, without
    a mask); warn about annotations of images the json does not list."""
    annotations = data["annotations"]
    for key in ("image_id", "category_id", "bbox"):
        lacking = [a for a in annotations if key not in a]
        if lacking:
            raise COCOFormatError(
                f"{len(lacking)} of the {len(annotations)} annotations in {json_file} have no "
                f"{key!r}, e.g. annotation id {lacking[0].get('id')}"
            )
    image_ids = {image["id"] for image in data["images"]}
    orphans = [a for a in annotations if a["image_id"] not in image_ids]
    if orphans:
        shown = sorted({a["image_id"] for a in orphans})[:_MAX_SHOWN]
        logger.warning(
            f"{len(orphans)} annotations in {json_file} belong to image ids that are not among "
            f"its images (e.g. {', '.join(map(str, shown))}); they are ignored"
        )
    if require_masks:
        boxes_only = [a for a in annotations if not a.get("segmentation")]
        if boxes_only:
            example = boxes_only[0]
            raise COCOFormatError(
                f"{len(boxes_only)} of the {len(annotations)} annotations in {json_file} have no "
                f"'segmentation' (e.g. annotation id {example.get('id')} of image "
                f"{example['image_id']}). Mask DINO learns and evaluates masks: give every "
                "annotation a polygon or RLE mask (a box-only json gives no training targets and "
                "no mask AP), or, for boxes only, register it with require_masks=False"
            )


def check_image_files(records: list[dict], json_file: str, image_root: str) -> None:
    missing = [r["file_name"] for r in records if not os.path.isfile(r["file_name"])]
    if missing:
        shown = ", ".join(os.path.relpath(m, image_root) for m in missing[:_MAX_SHOWN])
        raise FileNotFoundError(
            f"{len(missing)} of the {len(records)} images listed in {json_file} are missing under "
            f"{image_root} (e.g. {shown}). Check the image folder (for your own data: "
            "dataset.train_images / dataset.val_images), or remove those images from the json"
        )
