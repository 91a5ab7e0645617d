"""Draw predictions and ground truth on images with Pillow: masks, boxes, labels, segmentation maps.

Only Pillow and numpy are needed (no OpenCV, no matplotlib). Every class gets a stable colour: the
metadata's ``thing_colors``/``stuff_colors`` when present, else a colour derived from the class id
alone, so the same class looks the same in every picture and every run.

detectron2's API is here too: ``Visualizer(img_rgb, metadata, scale, instance_mode)``,
``draw_instance_predictions``, ``overlay_instances``, ``draw_binary_mask``, ``draw_soft_mask``,
``draw_sem_seg``, ``draw_panoptic_seg`` and ``draw_dataset_dict`` (raw dicts with
``annotations`` or mapped ones with ``instances``) return ``visualizer.output``, a ``VisImage``
whose ``get_image()`` is the HWC uint8 RGB drawing.

Example::

    vis = Visualizer(image_rgb, metadata)          # HWC uint8 RGB array, PIL image or CHW tensor
    vis.draw_outputs(predictor(image_rgb))         # instances / sem_seg / panoptic_seg
    vis.save("out.png")                            # or vis.output.get_image()
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

import numpy as np

from .canvas import Canvas, VisImage
from .image_io import load_pan_seg, load_sem_seg
from .visual_inputs import (
    annotation_drawables,
    boxes_to_numpy,
    class_color,
    color_to_rgb255,
    load_font,
    masks_to_numpy,
    random_color,
    region_anchor,
    text_labels,
    to_numpy,
)

__all__ = ["ColorMode", "VisImage", "Visualizer", "class_color", "load_font"]


class ColorMode(enum.Enum):
    """How instances are coloured (detectron2's modes)."""

    IMAGE = 0  # class colours, masks at the visualizer's alpha
    SEGMENTATION = 1  # metadata thing_colors (or class colours), opaque masks (alpha 0.8)
    IMAGE_BW = 2  # like IMAGE, with everything outside the masks in grey


class Visualizer(Canvas):
    """Draws detection data onto a copy of one image; our ``draw_*`` methods return ``self`` so
    calls chain, detectron2's return ``self.output`` (a ``VisImage``).

    Args:
        image: HWC uint8 RGB numpy array, PIL image, or CHW tensor.
        metadata: a dict or ``Metadata``-like object; reads ``thing_classes``, ``stuff_classes``,
            ``thing_colors``, ``stuff_colors`` and ``ignore_label`` when present.
        scale: the output image is ``scale`` times the input size.
        instance_mode: a ``ColorMode``.
        alpha: opacity of filled masks and segments.
        font_size: label height in pixels; default scales with the image size.
    """

    def __init__(
        self,
        image: Any,
        metadata: Any = None,
        scale: float = 1.0,
        instance_mode: ColorMode = ColorMode.IMAGE,
        *,
        alpha: float = 0.5,
        font_size: int | None = None,
    ):
        super().__init__(image, scale, alpha=alpha, font_size=font_size)
        self.metadata = metadata
        self.instance_mode = ColorMode(instance_mode)

    # ------------------------------------------------------------------ names and colours

    def _meta(self, key: str) -> Any:
        if isinstance(self.metadata, dict):
            return self.metadata.get(key)
        return getattr(self.metadata, key, None)

    def class_name(self, class_id: int, is_thing: bool = True) -> str:
        names = self._meta("thing_classes" if is_thing else "stuff_classes")
        if not names:  # a stuff id may index a list that also holds the things (Mask2Former style)
            names = self._meta("stuff_classes" if is_thing else "thing_classes")
        if names and 0 <= class_id < len(names):
            return str(names[class_id])
        return f"class {class_id}"

    def color(self, class_id: int, is_thing: bool = True) -> tuple[int, int, int]:
        colors = self._meta("thing_colors" if is_thing else "stuff_colors")
        if colors and 0 <= class_id < len(colors):
            return tuple(int(c) for c in colors[class_id][:3])
        return class_color(class_id)

    # ------------------------------------------------------------------ primitives

    def _draw_objects(
        self,
        boxes: np.ndarray | None,
        masks: np.ndarray | None,
        labels: Sequence[str] | None,
        colors: Sequence[tuple[int, int, int]],
        alpha: float | None = None,
        *,
        show_boxes: bool = True,
        show_masks: bool = True,
    ) -> None:
        """Masks, boxes and labels of N objects, the largest first (less occlusion). Labels sit
        at the box corner, else inside the mask (whether or not those are shown)."""
        count = len(colors)
        if masks is not None:
            areas = masks.reshape(count, -1).sum(axis=1)
        elif boxes is not None:
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        else:
            areas = np.zeros(count)
        for i in np.argsort(-areas, kind="stable"):
            if show_masks and masks is not None:
                self.draw_mask(masks[i], colors[i], alpha=alpha)
            if show_boxes and boxes is not None:
                self.draw_box(boxes[i], colors[i])
            if labels is not None:
                if boxes is not None:
                    anchor = float(boxes[i][0]), float(boxes[i][1])
                elif masks is not None and masks[i].any():
                    anchor = region_anchor(masks[i])
                else:
                    anchor = (0.0, 0.0)
                self.draw_text(anchor, labels[i], colors[i])

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
        boxes = boxes_to_numpy(boxes) if boxes is not None else None
        classes = fields.get("pred_classes", fields.get("gt_classes"))
        classes = to_numpy(classes).astype(int) if classes is not None else np.zeros(count, int)
        scores = fields.get("scores")
        masks = fields.get("pred_masks", fields.get("gt_masks"))
        masks = masks_to_numpy(masks, self.height, self.width) if masks is not None else None
        labels = None
        if show_labels:
            labels = [self.class_name(int(c)) for c in classes]
            if scores is not None:
                labels = [f"{t} {float(s):.0%}" for t, s in zip(labels, to_numpy(scores))]
        colors = [self.color(int(c)) for c in classes]
        self._draw_objects(
            boxes, masks, labels, colors, show_boxes=show_boxes, show_masks=show_masks
        )
        return self

    def draw_instance_predictions(self, predictions: Any, jittering: bool = True) -> VisImage:
        """detectron2's: draw ``pred_boxes``, ``pred_classes``, ``scores``, ``pred_masks`` and
        ``pred_keypoints`` of an ``Instances`` in the ``instance_mode``. Colours are the stable
        class colours (``jittering`` is accepted for compatibility)."""
        fields = predictions.get_fields()
        classes = fields.get("pred_classes")
        classes = None if classes is None else [int(c) for c in to_numpy(classes)]
        scores = fields.get("scores")
        labels = text_labels(
            classes, None if scores is None else to_numpy(scores), self._meta("thing_classes")
        )
        alpha = 0.8 if self.instance_mode == ColorMode.SEGMENTATION else self.alpha
        if self.instance_mode == ColorMode.IMAGE_BW:
            masks = fields.get("pred_masks")
            keep = None if masks is None else masks_to_numpy(masks, self.height, self.width)
            self.grey_outside(None if keep is None else keep.any(axis=0))
            alpha = 0.3
        return self.overlay_instances(
            boxes=fields.get("pred_boxes"),
            labels=labels,
            masks=fields.get("pred_masks"),
            keypoints=fields.get("pred_keypoints"),
            assigned_colors=None if classes is None else [self.color(c) for c in classes],
            alpha=alpha,
        )

    def overlay_instances(
        self,
        *,
        boxes: Any = None,
        labels: Sequence[str] | None = None,
        masks: Any = None,
        keypoints: Any = None,
        assigned_colors: Sequence[Any] | None = None,
        alpha: float = 0.5,
    ) -> VisImage:
        """detectron2's: draw N objects given as boxes (``Boxes`` or [N, 4] xyxy), masks
        (``BitMasks``/``PolygonMasks``-like, [N, H, W], or per-object polygons / RLE / dense
        masks), label texts, keypoints [N, K, 3] and colours (names, [0, 1] floats or 0-255)."""
        boxes = None if boxes is None else boxes_to_numpy(boxes)
        masks = None if masks is None else masks_to_numpy(masks, self.height, self.width)
        keypoints = None if keypoints is None else to_numpy(keypoints).astype(np.float64)
        counts = {len(x) for x in (boxes, masks, labels, keypoints) if x is not None}
        if len(counts) > 1:
            raise ValueError(f"boxes, masks, labels and keypoints give different counts {counts}")
        count = counts.pop() if counts else 0
        if count == 0:
            return self.output
        if assigned_colors is None:
            colors = [color_to_rgb255(random_color(rgb=True, maximum=1)) for _ in range(count)]
        else:
            colors = [color_to_rgb255(c) for c in assigned_colors]
        self._draw_objects(boxes, masks, labels, colors, alpha=alpha)
        if keypoints is not None:
            for color, points in zip(colors, keypoints):
                for x, y, score in points:
                    if score > 0.05:  # detectron2's visibility threshold
                        self.draw_point(x, y, color)
        return self.output

    def draw_binary_mask(
        self,
        binary_mask: np.ndarray,
        color: Any = None,
        *,
        edge_color: Any = None,
        text: str | None = None,
        alpha: float = 0.5,
        area_threshold: float = 10,
    ) -> VisImage:
        """detectron2's: blend ``color`` (random when None) into an ``[H, W]`` 0/1 mask and
        outline it; masks with fewer than ``area_threshold`` pixels are not drawn."""
        mask = to_numpy(binary_mask).astype(bool)
        color = color_to_rgb255(random_color(maximum=1) if color is None else color)
        if mask.sum() >= (area_threshold or 0) and mask.any():
            edge = None if edge_color is None else color_to_rgb255(edge_color)
            self.draw_mask(mask, color, alpha=alpha, edge_color=edge)
            if text is not None:
                self.draw_text(region_anchor(mask), text, color)
        return self.output

    def draw_soft_mask(
        self, soft_mask: np.ndarray, color: Any = None, *, text: str | None = None, alpha=0.5
    ) -> VisImage:
        """detectron2's: blend ``color`` with opacity ``soft_mask * alpha`` (``soft_mask`` in
        [0, 1], ``[H, W]``); ``text`` goes on the pixels above 0.5."""
        soft = to_numpy(soft_mask).astype(np.float32)
        color = color_to_rgb255(random_color(maximum=1) if color is None else color)
        region = soft > 0
        if region.any():
            self.draw_mask(region, color, alpha=soft * alpha, outline=False)
        if text is not None and (soft > 0.5).any():
            self.draw_text(region_anchor(soft > 0.5), text, color)
        return self.output

    def draw_sem_seg(
        self,
        sem_seg: Any,
        area_threshold: float | None = None,
        alpha: float | None = None,
        draw_text: bool = True,
        edge_color: Any = None,
        *,
        min_label_area: float = 0.002,
        unlabeled: Sequence[int] = (),
    ) -> VisImage:
        """Draw a semantic map: labels [H, W] (``ignore_label``/255 skipped) or scores [C, H, W].

        Regions with fewer than ``area_threshold`` pixels are skipped; with ``draw_text``,
        regions covering at least ``min_label_area`` of the image get their class name, except
        the classes in ``unlabeled`` (e.g. classes whose instances are labelled separately).
        ``edge_color`` outlines the regions (default: a darker class colour).
        """
        labels = to_numpy(sem_seg)
        if labels.ndim == 3:
            labels = labels.argmax(axis=0)
        ignore = self._meta("ignore_label")
        ignore = 255 if ignore is None else ignore
        for class_id in np.unique(labels):
            mask = labels == class_id
            if class_id == ignore or mask.sum() < (area_threshold or 0):
                continue
            color = self.color(int(class_id), is_thing=False)
            edge = None if edge_color is None else color_to_rgb255(edge_color)
            self.draw_mask(mask, color, alpha=alpha, edge_color=edge)
            if draw_text and mask.mean() >= min_label_area and int(class_id) not in unlabeled:
                self.draw_text(region_anchor(mask), self.class_name(int(class_id), False), color)
        return self.output

    def draw_panoptic_seg(
        self,
        panoptic_seg: Any,
        segments_info: list[dict] | None,
        area_threshold: float | None = None,
        alpha: float | None = None,
        *,
        label_divisor: int = 1000,
    ) -> VisImage:
        """Draw a panoptic map [H, W] of segment ids (0 = void) with its ``segments_info``.

        With ``segments_info=None`` the ids encode ``category * label_divisor + instance``.
        """
        ids = to_numpy(panoptic_seg)
        if segments_info is None:
            segments_info = [
                {"id": int(s), "category_id": int(s) // label_divisor, "isthing": True}
                for s in np.unique(ids)
                if s > 0
            ]
        segments = sorted(segments_info, key=lambda s: -int((ids == s["id"]).sum()))
        for segment in segments:
            mask = ids == segment["id"]
            if not mask.any() or mask.sum() < (area_threshold or 0):
                continue
            is_thing = bool(segment.get("isthing", True))
            category = int(segment["category_id"])
            color = self.color(category, is_thing)
            self.draw_mask(mask, color, alpha=alpha)
            self.draw_text(region_anchor(mask), self.class_name(category, is_thing), color)
        return self.output

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

    def draw_dataset_dict(self, record: dict[str, Any]) -> VisImage:
        """Draw the ground truth of a dataset dict: raw ``annotations`` (boxes, polygons / RLE,
        category labels, crowd marks), ``sem_seg`` (or ``sem_seg_file_name``), ``pan_seg`` (or
        ``pan_seg_file_name``) with ``segments_info``, or a mapped sample's ``instances``;
        thing classes present as instances are labelled once, by their instances."""
        instances = record.get("instances")
        sem_seg = record.get("sem_seg")
        if sem_seg is None and "sem_seg_file_name" in record:
            sem_seg = load_sem_seg(record)
        if sem_seg is not None:
            labelled = set()
            if instances is not None and instances.has("gt_classes"):
                labelled = {int(c) for c in to_numpy(instances.gt_classes)}
            self.draw_sem_seg(sem_seg, alpha=0.5, unlabeled=labelled)
        pan_seg = record.get("pan_seg")
        if pan_seg is None and "pan_seg_file_name" in record:
            pan_seg = load_pan_seg(record)
        if pan_seg is not None:
            self.draw_panoptic_seg(pan_seg, record["segments_info"], alpha=0.5)
        if record.get("annotations"):
            boxes, masks, categories, crowd = annotation_drawables(
                record["annotations"], self.height, self.width
            )
            labels = text_labels(categories, None, self._meta("thing_classes"), crowd)
            colors = [self.color(c) for c in categories]
            self.overlay_instances(boxes=boxes, masks=masks, labels=labels, assigned_colors=colors)
        if instances is not None:
            self.draw_instances(instances)
        return self.output
