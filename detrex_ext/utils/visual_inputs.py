"""What the ``Visualizer`` draws, converted from the many forms detectron2 accepts: images,
boxes, masks (dense, ``BitMasks``-like, polygons, RLE), colours, label texts, and the
annotations of raw dataset dicts. Needs only numpy, Pillow and pycocotools.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image, ImageColor, ImageFont

__all__ = [
    "annotation_drawables",
    "as_rgb_array",
    "boxes_to_numpy",
    "class_color",
    "color_to_rgb255",
    "load_font",
    "mask_edges",
    "masks_to_numpy",
    "random_color",
    "region_anchor",
    "text_labels",
    "to_numpy",
]

_GOLDEN_RATIO_CONJUGATE = 0.618033988749895

Color = tuple[int, int, int]


def class_color(class_id: int) -> Color:
    """A distinct, stable RGB colour for a class id (hues spread by the golden ratio)."""
    hue = (0.13 + class_id * _GOLDEN_RATIO_CONJUGATE) % 1.0
    saturation = 0.55 + 0.35 * ((class_id * 7) % 3) / 2  # three saturation levels
    red, green, blue = colorsys.hsv_to_rgb(hue, saturation, 0.95)
    return int(red * 255), int(green * 255), int(blue * 255)


def random_color(rgb: bool = True, maximum: int = 255) -> np.ndarray:
    """A random bright colour from ``np.random`` (detectron2's ``colormap.random_color``): three
    values in [0, ``maximum``], RGB order (BGR with ``rgb=False``)."""
    color = np.asarray(class_color(int(np.random.randint(1 << 16))), dtype=np.float64)
    color = color * maximum / 255
    return color if rgb else color[::-1]


def color_to_rgb255(color: Any) -> Color:
    """An RGB colour of 0-255 ints from a colour name or hex string (``"green"``, ``"#00ff00"``),
    from matplotlib-style floats in [0, 1] (detectron2's convention), or from 0-255 ints."""
    if isinstance(color, str):
        return ImageColor.getrgb(color)[:3]
    values = np.asarray(color).reshape(-1)[:3]
    if np.issubdtype(values.dtype, np.floating) and values.max(initial=0) <= 1.0:
        values = values * 255
    return tuple(int(round(float(c))) for c in np.clip(values, 0, 255))


def to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (torch is not needed to draw)
        return x.detach().to("cpu").numpy()
    return np.asarray(x)


def as_rgb_array(image: Any) -> np.ndarray:
    """HWC uint8 RGB from an HWC/HW array, a PIL image or a CHW tensor (as the data mappers make)."""
    if isinstance(image, Image.Image):
        return np.array(image.convert("RGB"))
    if hasattr(image, "permute") and image.ndim == 3 and image.shape[0] in (1, 3):  # CHW tensor
        image = image.permute(1, 2, 0)
    array = to_numpy(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HWC RGB image, got an array of shape {array.shape}")
    if array.dtype != np.uint8:
        scale = 255.0 if array.max(initial=0) <= 1.0 else 1.0
        array = np.clip(array.astype(np.float32) * scale, 0, 255).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.array(array[:, :, :3], dtype=np.uint8, order="C")  # a copy: never draw on the input


def load_font(size: int) -> ImageFont.ImageFont:
    """Pillow's built-in font at ``size`` pixels (a fixed small bitmap font before Pillow 10.1)."""
    try:
        return ImageFont.load_default(size=size)  # scalable font, Pillow >= 10.1
    except TypeError:
        return ImageFont.load_default()


def mask_edges(mask: np.ndarray) -> np.ndarray:
    """Pixels of a boolean mask [H, W] that touch a pixel outside it (4-neighbourhood)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def region_anchor(mask: np.ndarray) -> tuple[float, float]:
    """A point inside-ish a region to put its label: the median of its pixel coordinates."""
    ys, xs = np.nonzero(mask)
    return float(np.median(xs)), float(np.median(ys))


def _polygons_to_mask(polygons: Sequence[Any], height: int, width: int) -> np.ndarray:
    if len(polygons) == 0:
        return np.zeros((height, width), dtype=bool)
    rles = mask_util.frPyObjects([np.asarray(p, dtype=np.float64) for p in polygons], height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def _one_mask(mask: Any, height: int, width: int) -> np.ndarray:
    """One object's mask from polygons (a list of flat coordinate lists), a COCO RLE dict or a
    dense ``[H, W]`` array (probabilities are thresholded at 0.5)."""
    if isinstance(mask, dict):
        rle = (
            mask_util.frPyObjects(mask, *mask["size"]) if isinstance(mask["counts"], list) else mask
        )
        return mask_util.decode(rle).astype(bool)
    if isinstance(mask, (list, tuple)):
        return _polygons_to_mask(mask, height, width)
    array = to_numpy(mask)
    return array if array.dtype == np.bool_ else array >= 0.5


def masks_to_numpy(masks: Any, height: int, width: int) -> np.ndarray:
    """Masks as bool ``[N, H, W]`` from anything detectron2's Visualizer takes: an ``[N, H, W]``
    tensor/array, a ``BitMasks``-like object (``.tensor``), a ``PolygonMasks``-like object
    (``.polygons``), or a list of per-object polygons / RLE dicts / dense masks."""
    if hasattr(masks, "polygons"):
        masks = list(masks.polygons)
    elif hasattr(masks, "tensor"):
        masks = masks.tensor
    if isinstance(masks, (list, tuple)):
        dense = [_one_mask(m, height, width) for m in masks]
        return np.stack(dense) if dense else np.zeros((0, height, width), dtype=bool)
    return _one_mask(masks, height, width)


def boxes_to_numpy(boxes: Any) -> np.ndarray:
    """``[N, 4]`` float xyxy boxes from a ``Boxes``-like object (``.tensor``), an array or a
    list of boxes."""
    boxes = getattr(boxes, "tensor", boxes)
    if isinstance(boxes, (list, tuple)):
        boxes = np.asarray([to_numpy(b) for b in boxes], dtype=np.float64)
    boxes = to_numpy(boxes).astype(np.float64)
    if boxes.size and boxes.shape[-1] != 4:
        raise ValueError(f"expected xyxy boxes [N, 4], got shape {boxes.shape}")
    return boxes.reshape(-1, 4)


def text_labels(
    classes: Sequence[int] | None,
    scores: Sequence[float] | None,
    class_names: Sequence[str] | None,
    is_crowd: Sequence[bool] | None = None,
) -> list[str] | None:
    """detectron2's labels: ``"<name> <score>%"``, ``"<id>"`` without names, ``"|crowd"``
    appended for crowd annotations."""
    labels = None
    if classes is not None:
        labels = [class_names[i] if class_names else str(i) for i in classes]
    if scores is not None:
        percent = [f"{float(s) * 100:.0f}%" for s in scores]
        labels = percent if labels is None else [f"{t} {p}" for t, p in zip(labels, percent)]
    if labels is not None and is_crowd is not None:
        labels = [t + ("|crowd" if crowd else "") for t, crowd in zip(labels, is_crowd)]
    return labels


def annotation_drawables(
    annotations: Sequence[dict], height: int, width: int
) -> tuple[np.ndarray, np.ndarray | None, list[int], list[bool]]:
    """Boxes ``[N, 4]`` (xyxy), masks (bool ``[N, H, W]`` or None when the annotations have no
    ``segmentation``), category ids and crowd flags of dataset-dict annotations."""
    from detrex_ext.structures.boxes import BoxMode

    boxes = np.asarray(
        [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations],
        dtype=np.float64,
    ).reshape(-1, 4)
    masks = None
    if annotations and "segmentation" in annotations[0]:
        masks = masks_to_numpy([a["segmentation"] for a in annotations], height, width)
    categories = [int(a["category_id"]) for a in annotations]
    crowd = [bool(a.get("iscrowd", 0)) for a in annotations]
    return boxes, masks, categories, crowd
