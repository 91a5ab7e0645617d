"""COCO-format instance datasets: json loading, registration, and conversion back to COCO."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO

from detrex_ext.structures import BoxMode

from ..catalog import DatasetCatalog, MetadataCatalog, register_dataset
from ..detection_utils import load_pan_seg
from .builtin_meta import contiguous_id_map, palette
from .coco_checks import (
    COCOFormatError,
    check_annotations,
    check_image_files,
    checked_categories,
    read_coco_json,
)

logger = logging.getLogger(__name__)

__all__ = ["COCOFormatError", "convert_to_coco_dict", "load_coco_json", "register_coco_instances"]

_CATEGORY_CACHE: dict[str, list[dict]] = {}


def _instance_metadata_from_categories(categories: list[dict]) -> dict[str, Any]:
    categories = sorted(categories, key=lambda c: c["id"])
    return {
        "thing_classes": [c["name"] for c in categories],
        "thing_colors": palette(len(categories)),
        "thing_dataset_id_to_contiguous_id": contiguous_id_map(c["id"] for c in categories),
    }


def _read_categories(json_file: str) -> list[dict]:
    if json_file not in _CATEGORY_CACHE:
        categories = checked_categories(read_coco_json(json_file)["categories"], json_file)
        _CATEGORY_CACHE[json_file] = categories
    return _CATEGORY_CACHE[json_file]


def load_coco_json(
    json_file: str,
    image_root: str,
    dataset_name: str | None = None,
    extra_annotation_keys: list[str] | None = None,
    *,
    require_masks: bool = True,
    check_files: bool = True,
) -> list[dict]:
    """Read a COCO instances json into dataset dicts.

    Category ids become contiguous ids through the dataset's metadata
    (``thing_dataset_id_to_contiguous_id``; for a dataset without one, sorted ids -> 0..K-1).
    Polygons with fewer than 3 points are dropped (and an annotation left with none);
    uncompressed RLE is compressed.

    The file is checked first, each problem refused with its count and an example: invalid JSON,
    missing keys, categories sharing an id, annotations without ``segmentation`` (with
    ``require_masks``: Mask DINO needs masks), image files missing on disk (with
    ``check_files``: a cheap existence check, so a wrong folder fails now, not hours into
    training). Annotations of image ids the json does not list are ignored with a warning.

    Returns:
        ``[{file_name, height, width, image_id, annotations: [{bbox (XYWH_ABS), bbox_mode,
        category_id, iscrowd, segmentation, ...}]}]`` sorted by image id.
    """
    data = read_coco_json(json_file)
    checked_categories(data["categories"], json_file)
    check_annotations(data, json_file, require_masks)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    categories = coco.loadCats(sorted(coco.getCatIds()))
    _CATEGORY_CACHE[json_file] = categories
    id_map = None
    if dataset_name is not None:
        id_map = MetadataCatalog.get(dataset_name).get("thing_dataset_id_to_contiguous_id")
    if id_map is None:
        id_map = contiguous_id_map(c["id"] for c in categories)
    extra_keys = list(extra_annotation_keys or [])
    records = []
    dropped = 0
    for image_id in sorted(coco.imgs):
        image = coco.imgs[image_id]
        annotations = []
        for ann in coco.imgToAnns.get(image_id, []):
            converted = _convert_annotation(ann, id_map, extra_keys, json_file)
            if converted is None:
                dropped += 1
            else:
                annotations.append(converted)
        records.append(
            {
                "file_name": os.path.join(image_root, image["file_name"]),
                "height": image["height"],
                "width": image["width"],
                "image_id": image_id,
                "annotations": annotations,
            }
        )
    if dropped:
        logger.warning("Dropped %d annotations of %s without a valid polygon", dropped, json_file)
    if check_files:
        check_image_files(records, json_file, image_root)
    logger.info("Loaded %d images in COCO format from %s", len(records), json_file)
    return records


def _convert_annotation(
    ann: dict, id_map: dict[int, int], extra_keys: list[str], json_file: str
) -> dict | None:
    if ann["category_id"] not in id_map:
        raise KeyError(
            f"annotation {ann.get('id')} of {json_file} has category_id {ann['category_id']}, "
            f"which is not among the dataset's categories {sorted(id_map)}"
        )
    obj = {
        "bbox": list(ann["bbox"]),
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": id_map[ann["category_id"]],
        "iscrowd": ann.get("iscrowd", 0),
    }
    segm = ann.get("segmentation")
    if isinstance(segm, dict):
        if isinstance(segm.get("counts"), list):
            segm = mask_util.frPyObjects(segm, *segm["size"])
        obj["segmentation"] = segm
    elif isinstance(segm, list):
        polygons = [p for p in segm if len(p) % 2 == 0 and len(p) >= 6]
        if not polygons:
            return None
        obj["segmentation"] = polygons
    if "keypoints" in ann:
        obj["keypoints"] = ann["keypoints"]
    for key in extra_keys:
        if key in ann:
            obj[key] = ann[key]
    return obj


def register_coco_instances(
    name: str,
    metadata: dict[str, Any],
    json_file: str,
    image_root: str,
    *,
    require_masks: bool = True,
) -> str:
    """Register a COCO-format instance dataset (your own data) under ``name``.

    Args:
        name: a new dataset name, e.g. "my_dataset_train".
        metadata: extra metadata; may be ``{}``: the classes are then read from the json's
            categories (sorted by id) when first needed.
        json_file: path to the COCO instances json.
        image_root: folder that the json's ``file_name`` entries are relative to.
        require_masks: refuse annotations without ``segmentation`` (False: boxes only; no mask
            targets or mask AP then).

    Returns:
        ``name``, so that a config can register lazily where it names the dataset:
        ``names=L(register_coco_instances)(name=..., metadata={}, json_file=..., image_root=...)``
        (paths then follow command-line overrides).
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    metadata = dict(metadata)
    lazy = None
    if "thing_classes" not in metadata:
        keys = ("thing_classes", "thing_colors", "thing_dataset_id_to_contiguous_id")
        if name in MetadataCatalog.data or _is_builtin(name):
            # the name exists: compare classes now
            metadata.update(_instance_metadata_from_categories(_read_categories(json_file)))
        else:
            lazy = (keys, lambda: _instance_metadata_from_categories(_read_categories(json_file)))
    elif "thing_dataset_id_to_contiguous_id" not in metadata and os.path.isfile(json_file):
        categories = _read_categories(json_file)
        if len(categories) != len(metadata["thing_classes"]):
            raise ValueError(
                f"metadata of {name!r} lists {len(metadata['thing_classes'])} thing_classes but "
                f"{json_file} has {len(categories)} categories"
            )
    metadata.setdefault("evaluator_type", "coco")
    register_dataset(
        name,
        lambda: load_coco_json(json_file, image_root, name, require_masks=require_masks),
        {"json_file": json_file, "image_root": image_root, **metadata},
        lazy_metadata=lazy,
    )
    return name


def _is_builtin(name: str) -> bool:
    from .builtin import is_builtin_dataset

    return is_builtin_dataset(name)


def convert_to_coco_dict(
    dataset_name: str | list[dict], metadata: Any | None = None
) -> dict[str, Any]:
    """A registered dataset (contiguous category ids) as a COCO json dict.

    Used to evaluate datasets that have no json file (e.g. generated data). Records of a
    panoptic dataset without instance annotations contribute their thing segments (masks read
    from the panoptic labels). Areas are pixel counts of the rasterised masks (box areas without
    masks); annotation ids start at 1.

    Args:
        dataset_name: a name registered in ``DatasetCatalog`` (detectron2's signature), or
            the dataset dicts themselves.
        metadata: the dataset's metadata; only with dataset dicts (a name brings its own).
    """
    if isinstance(dataset_name, str):
        if metadata is not None:
            raise TypeError("convert_to_coco_dict(name) takes its metadata from MetadataCatalog")
        dataset_dicts = DatasetCatalog.get(dataset_name)
        metadata = MetadataCatalog.get(dataset_name)
    else:
        if metadata is None:
            raise TypeError("convert_to_coco_dict(dataset_dicts, metadata) needs the metadata")
        dataset_dicts = dataset_name
    thing_classes = metadata.get("thing_classes") or []
    id_map = metadata.get("thing_dataset_id_to_contiguous_id")
    reverse = (
        {v: k for k, v in id_map.items()} if id_map else {i: i for i in range(len(thing_classes))}
    )
    categories = [{"id": reverse[i], "name": name} for i, name in enumerate(thing_classes)]
    images, annotations = [], []
    for record in dataset_dicts:
        record_annotations = record.get("annotations")
        if record_annotations is None and "segments_info" in record:
            record_annotations = _panoptic_thing_annotations(record)
        h, w = record["height"], record["width"]
        images.append(
            {
                "id": record["image_id"],
                "width": w,
                "height": h,
                "file_name": record.get("file_name", ""),
            }
        )
        for ann in record_annotations or []:
            box = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYWH_ABS)
            coco_ann = {
                "id": len(annotations) + 1,
                "image_id": record["image_id"],
                "bbox": [float(v) for v in box],
                "category_id": reverse[ann["category_id"]],
                "iscrowd": int(ann.get("iscrowd", 0)),
            }
            segm = ann.get("segmentation")
            if segm is not None:
                rle = _to_rle(segm, h, w)
                coco_ann["area"] = float(mask_util.area(rle))
                if isinstance(segm, list):
                    coco_ann["segmentation"] = [[float(v) for v in p] for p in segm]
                else:
                    coco_ann["segmentation"] = {"size": rle["size"], "counts": _counts_str(rle)}
            else:
                coco_ann["area"] = float(box[2] * box[3])
            annotations.append(coco_ann)
    return {
        "info": {"description": "converted from dataset dicts by detrex_ext"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def _panoptic_thing_annotations(record: dict) -> list[dict]:
    """Instance annotations (binary masks) from the thing segments of a panoptic record."""
    things = [s for s in record["segments_info"] if s.get("isthing")]
    if not things:
        return []
    ids = load_pan_seg(record)
    record.setdefault("height", ids.shape[0])
    record.setdefault("width", ids.shape[1])
    annotations = []
    for segment in things:
        mask = ids == segment["id"]
        if not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
        annotations.append(
            {
                "bbox": box,
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": segment["category_id"],
                "iscrowd": int(segment.get("iscrowd", 0)),
                "segmentation": mask,
            }
        )
    return annotations


def _to_rle(segm: Any, height: int, width: int) -> dict:
    if isinstance(segm, list):
        return mask_util.merge(
            mask_util.frPyObjects([np.asarray(p, dtype=np.float64) for p in segm], height, width)
        )
    if isinstance(segm, dict):
        if isinstance(segm.get("counts"), list):
            return mask_util.frPyObjects(segm, *segm["size"])
        return segm
    mask = np.asfortranarray(np.asarray(segm, dtype=np.uint8))
    return mask_util.encode(mask)


def _counts_str(rle: dict) -> str:
    counts = rle["counts"]
    return counts.decode("ascii") if isinstance(counts, bytes) else counts
