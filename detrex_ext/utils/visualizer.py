"""Draw predictions and ground truth on images with Pillow: masks, boxes, labels, segmentation maps.

Only Pillow and numpy are needed (no OpenCV, no matplotlib). Every class gets a stable colour: the
metadata's ``thing_colors``/``stuff_colors`` when present, else a colour derived from the class id
alone, so the same class looks the same in every picture and every run.

Example::

    vis = Visualizer(image_rgb, metadata)          # HWC uint8 RGB array, PIL image or CHW tensor
    vis.draw_outputs(predictor(image_rgb))         # instances / sem_seg / panoptic_seg
    vis.save("out.png")
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_GOLDEN_RATIO_CONJUGATE = 0.618033988749895


def class_color(class_id: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour for a class id (hues spread by the golden ratio)."""
    hue = (0.13 + class_id * _GOLDEN_RATIO_CONJUGATE) % 1.0
    saturation = 0.55 + 0.35 * ((class_id * 7) % 3) / 2  # three saturation levels
    red, green, blue = colorsys.hsv_to_rgb(hue, saturation, 0.95)
    return int(red * 255), int(green * 255), int(blue * 255)


def _meta(metadata: Any, key: str) -> Any:
    if metadata is None:
        return None
    if isinstance(metadata, dict):
        return metadata.get(key)
    return getattr(metadata, key, None)


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (torch is not imported here: plotting needs none)
        return x.detach().to("cpu").numpy()
    return np.asarray(x)


def _as_rgb_array(image: Any) -> np.ndarray:
    """HWC uint8 RGB from an HWC/HW array, a PIL image or a CHW tensor (as the data mappers make)."""
    if isinstance(image, Image.Image):
        return np.array(image.convert("RGB"))
    if hasattr(image, "permute") and image.ndim == 3 and image.shape[0] in (1, 3):  # CHW tensor
        image = image.permute(1, 2, 0)
    array = _to_numpy(image)
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


def _mask_edges(mask: np.ndarray) -> np.ndarray:
    """Pixels of a boolean mask [H, W] that touch a pixel outside it (4-neighbourhood)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def _masks_to_numpy(masks: Any, height: int, width: int) -> np.ndarray:
    """Masks as bool [N, H, W] from a tensor/array, ``BitMasks`` or ``PolygonMasks``."""
    if hasattr(masks, "polygons"):
        from detrex_ext.structures import polygons_to_bitmask

        bitmasks = [polygons_to_bitmask(p, height, width) for p in masks.polygons]
        return np.stack(bitmasks) if bitmasks else np.zeros((0, height, width), dtype=bool)
    if hasattr(masks, "tensor"):
        masks = masks.tensor
    array = _to_numpy(masks)
    if array.dtype != np.bool_:
        array = array >= 0.5  # probabilities or 0/1 floats
    return array


class Visualizer:
    """Draws onto a copy of one image; every ``draw_*`` returns ``self`` so calls chain.

    Args:
        image: HWC uint8 RGB numpy array, PIL image, or CHW tensor.
        metadata: a dict or ``Metadata``-like object; reads ``thing_classes``, ``stuff_classes``,
            ``thing_colors``, ``stuff_colors`` and ``ignore_label`` when present.
        alpha: opacity of filled masks and segments.
        font_size: label height in pixels; default scales with the image size.
    """

    def __init__(
        self, image: Any, metadata: Any = None, *, alpha: float = 0.5, font_size: int | None = None
    ):
        self.image = _as_rgb_array(image)
        self.height, self.width = self.image.shape[:2]
        self.metadata = metadata
        self.alpha = alpha
        self.font = load_font(font_size or max(10, min(self.height, self.width) // 40))
        self._labels: list[tuple[tuple[float, float], str, tuple[int, int, int]]] = []
        self._boxes: list[tuple[Sequence[float], tuple[int, int, int]]] = []

    # ------------------------------------------------------------------ names and colours

    def class_name(self, class_id: int, is_thing: bool = True) -> str:
        names = _meta(self.metadata, "thing_classes" if is_thing else "stuff_classes")
        if not names:  # a stuff id may index a list that also holds the things (Mask2Former style)
            names = _meta(self.metadata, "stuff_classes" if is_thing else "thing_classes")
        if names and 0 <= class_id < len(names):
            return str(names[class_id])
        return f"class {class_id}"

    def color(self, class_id: int, is_thing: bool = True) -> tuple[int, int, int]:
        colors = _meta(self.metadata, "thing_colors" if is_thing else "stuff_colors")
        if colors and 0 <= class_id < len(colors):
            return tuple(int(c) for c in colors[class_id][:3])
        return class_color(class_id)

    # ------------------------------------------------------------------ primitives

    def draw_mask(
        self, mask: np.ndarray, color: tuple[int, int, int], *, alpha: float | None = None
    ) -> Visualizer:
        """Blend ``color`` into the pixels of a bool mask [H, W] and outline it."""
        if mask.shape != (self.height, self.width):
            raise ValueError(
                f"mask of shape {mask.shape} does not match the image ({self.height}, {self.width}); "
                "draw outputs at the image's resolution"
            )
        alpha = self.alpha if alpha is None else alpha
        region = self.image[mask].astype(np.float32)
        self.image[mask] = (region * (1 - alpha) + np.asarray(color) * alpha).astype(np.uint8)
        darker = tuple(int(c * 0.6) for c in color)
        self.image[_mask_edges(mask)] = darker
        return self

    def draw_box(self, box_xyxy: Sequence[float], color: tuple[int, int, int]) -> Visualizer:
        """Queue a box outline (drawn above all masks when the image is rendered)."""
        self._boxes.append(([float(v) for v in box_xyxy], color))
        return self

    def draw_text(self, position_xy: tuple[float, float], text: str, color) -> Visualizer:
        """Queue a label with its top-left corner at ``position_xy`` on a coloured background."""
        self._labels.append((position_xy, text, color))
        return self

    # ------------------------------------------------------------------ model outputs

    def draw_instances(
        self,
        instances: Any,
        *,
        show_masks: bool = True,
        show_boxes: bool = True,
        show_labels: bool = True,
    ) -> Visualizer:
        """Draw ``Instances`` with ``pred_*`` fields (predictions) or ``gt_*`` fields (ground truth).

        Reads ``pred_boxes``/``gt_boxes`` (``Boxes`` or [N, 4] xyxy absolute), ``scores``,
        ``pred_classes``/``gt_classes`` and ``pred_masks``/``gt_masks`` ([N, H, W] at the image's
        resolution, ``BitMasks`` or ``PolygonMasks``). Large objects are drawn first.
        """
        fields = instances.get_fields() if hasattr(instances, "get_fields") else dict(instances)
        count = len(instances)
        if count == 0:
            return self
        boxes = fields.get("pred_boxes", fields.get("gt_boxes"))
        if boxes is not None:
            boxes = _to_numpy(getattr(boxes, "tensor", boxes)).reshape(-1, 4)
        classes = fields.get("pred_classes", fields.get("gt_classes"))
        classes = _to_numpy(classes).astype(int) if classes is not None else np.zeros(count, int)
        scores = fields.get("scores")
        scores = _to_numpy(scores) if scores is not None else None
        masks = fields.get("pred_masks", fields.get("gt_masks"))
        masks = _masks_to_numpy(masks, self.height, self.width) if masks is not None else None

        if masks is not None:
            areas = masks.reshape(count, -1).sum(axis=1)
        elif boxes is not None:
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        else:
            areas = np.zeros(count)
        for i in np.argsort(-areas, kind="stable"):
            color = self.color(int(classes[i]))
            if show_masks and masks is not None:
                self.draw_mask(masks[i], color)
            if show_boxes and boxes is not None:
                self.draw_box(boxes[i], color)
            if show_labels:
                text = self.class_name(int(classes[i]))
                if scores is not None:
                    text += f" {float(scores[i]):.0%}"
                self.draw_text(self._label_anchor(boxes, masks, i), text, color)
        return self

    def draw_sem_seg(
        self, sem_seg: Any, *, min_label_area: float = 0.002, unlabeled: Sequence[int] = ()
    ) -> Visualizer:
        """Draw a semantic map: labels [H, W] (``ignore_label``/255 skipped) or scores [C, H, W].

        Regions covering at least ``min_label_area`` of the image get their class name, except
        the classes in ``unlabeled`` (e.g. classes whose instances are labelled separately).
        """
        labels = _to_numpy(sem_seg)
        if labels.ndim == 3:
            labels = labels.argmax(axis=0)
        ignore = _meta(self.metadata, "ignore_label")
        ignore = 255 if ignore is None else ignore
        for class_id in np.unique(labels):
            if class_id == ignore:
                continue
            mask = labels == class_id
            color = self.color(int(class_id), is_thing=False)
            self.draw_mask(mask, color)
            if mask.mean() >= min_label_area and int(class_id) not in unlabeled:
                self.draw_text(_region_anchor(mask), self.class_name(int(class_id), False), color)
        return self

    def draw_panoptic_seg(
        self, panoptic_seg: Any, segments_info: list[dict] | None, *, label_divisor: int = 1000
    ) -> Visualizer:
        """Draw a panoptic map [H, W] of segment ids (0 = void) with its ``segments_info``.

        With ``segments_info=None`` the ids encode ``category * label_divisor + instance``.
        """
        ids = _to_numpy(panoptic_seg)
        if segments_info is None:
            segments_info = [
                {"id": int(s), "category_id": int(s) // label_divisor, "isthing": True}
                for s in np.unique(ids)
                if s > 0
            ]
        segments = sorted(segments_info, key=lambda s: -int((ids == s["id"]).sum()))
        for segment in segments:
            mask = ids == segment["id"]
            if not mask.any():
                continue
            is_thing = bool(segment.get("isthing", True))
            category = int(segment["category_id"])
            color = self.color(category, is_thing)
            self.draw_mask(mask, color)
            self.draw_text(_region_anchor(mask), self.class_name(category, is_thing), color)
        return self

    def draw_outputs(self, outputs: dict[str, Any]) -> Visualizer:
        """Draw a model output dict: the panoptic map if any, else the semantic map, then instances."""
        if "panoptic_seg" in outputs:
            ids, segments_info = outputs["panoptic_seg"]
            self.draw_panoptic_seg(ids, segments_info)
        elif "sem_seg" in outputs:
            self.draw_sem_seg(outputs["sem_seg"])
        if "instances" in outputs and "panoptic_seg" not in outputs:
            self.draw_instances(outputs["instances"])
        return self

    def draw_dataset_dict(self, record: dict[str, Any]) -> Visualizer:
        """Draw the ground truth of a mapped training sample (``instances`` and/or ``sem_seg``);
        thing classes present as instances are labelled once, by their instances."""
        instances = record.get("instances")
        if "sem_seg" in record:
            labelled = set()
            if instances is not None and instances.has("gt_classes"):
                labelled = {int(c) for c in _to_numpy(instances.gt_classes)}
            self.draw_sem_seg(record["sem_seg"], unlabeled=labelled)
        if instances is not None:
            self.draw_instances(instances)
        return self

    # ------------------------------------------------------------------ output

    def get_image(self) -> Image.Image:
        """The drawing as a PIL image (boxes and labels rendered above the masks)."""
        canvas = Image.fromarray(self.image)
        draw = ImageDraw.Draw(canvas)
        line = max(1, min(self.height, self.width) // 300 + 1)
        for (x0, y0, x1, y1), color in self._boxes:
            draw.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=color, width=line)
        for (x, y), text, color in self._labels:
            left, top, right, bottom = draw.textbbox((0, 0), text, font=self.font)
            w, h = right - left + 4, bottom - top + 4
            x = min(max(0.0, x), max(0.0, self.width - w))
            y = min(max(0.0, y), max(0.0, self.height - h))
            draw.rectangle([x, y, x + w, y + h], fill=tuple(int(c * 0.7) for c in color))
            draw.text((x + 2 - left, y + 2 - top), text, fill=(255, 255, 255), font=self.font)
        return canvas

    def get_output(self) -> np.ndarray:
        """The drawing as an HWC uint8 RGB array."""
        return np.asarray(self.get_image())

    def save(self, path: str) -> None:
        """Write the drawing as a PNG file."""
        self.get_image().save(path, format="PNG")

    def _label_anchor(self, boxes, masks, index: int) -> tuple[float, float]:
        if boxes is not None:
            return float(boxes[index][0]), float(boxes[index][1])
        if masks is not None and masks[index].any():
            return _region_anchor(masks[index])
        return 0.0, 0.0


def _region_anchor(mask: np.ndarray) -> tuple[float, float]:
    """A point inside-ish a region to put its label: the median of its pixel coordinates."""
    ys, xs = np.nonzero(mask)
    return float(np.median(xs)), float(np.median(ys))
