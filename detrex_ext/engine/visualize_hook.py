"""Pictures of the model's predictions on validation images, written while and after training.

One PNG per drawing, ``<output_dir>/iter_{iterations done:07d}.png`` (``eval.png`` for
``--eval-only``): a grid with one row per
image and the columns "ground truth", "instances" (scores >= a threshold) and "panoptic" (when the
model outputs one). Images go through the config's test-time mapping exactly as in evaluation;
outputs are requested at a display size (small images are enlarged, so labels stay legible).

Enable it in a config (``tools/train_net.py`` reads it)::

    train.visualize = dict(enabled=True, num_images=6, score_threshold=0.5, period=0)
    # optional: output_dir="${train.output_dir}/predictions", min_display_size=256
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from detrex_ext.config import instantiate, try_get_key
from detrex_ext.data import load_image, load_pan_seg, load_sem_seg
from detrex_ext.data.detection_utils import annotations_to_instances
from detrex_ext.evaluation import inference_context
from detrex_ext.structures import BoxMode, Instances
from detrex_ext.utils.file_io import PathManager
from detrex_ext.utils.visualizer import Visualizer, load_font

from .ddp import unwrap_model
from .predictor import config_metadata, filter_instances, inference_augmentations, model_input
from .train_loop import HookBase

__all__ = ["VisualizePredictions", "draw_predictions", "build_visualize_hook"]

logger = logging.getLogger(__name__)

_CAPTION_HEIGHT = 18
_GAP = 4


class _WithoutThingColors:
    """A metadata view without ``thing_colors``: objects are drawn in their class-id colour,
    which stands out even on objects painted in their dataset colour (the synthetic shapes'
    ``thing_colors`` are the colours they are rendered in). Stuff keeps its dataset colours."""

    def __init__(self, metadata: Any) -> None:
        for key in ("thing_classes", "stuff_classes", "stuff_colors", "ignore_label"):
            setattr(self, key, getattr(metadata, key, None))


def _nearest_resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of the first two axes (label maps, masks)."""
    rows = (np.arange(height) * array.shape[0] / height).astype(np.int64)
    cols = (np.arange(width) * array.shape[1] / width).astype(np.int64)
    return array[rows][:, cols]


def _ground_truth(record: dict, image: np.ndarray, metadata: Any) -> Image.Image:
    """The record's panoptic labels if it has them, else its instance annotations, else its
    semantic labels."""
    height, width = image.shape[:2]
    vis = Visualizer(image, metadata)
    pan_seg = load_pan_seg(record) if "segments_info" in record else None
    sem_seg = None if pan_seg is not None or record.get("annotations") else load_sem_seg(record)
    if pan_seg is not None:
        vis.draw_panoptic_seg(_nearest_resize(pan_seg, height, width), record["segments_info"])
    elif sem_seg is not None:
        vis.draw_sem_seg(_nearest_resize(sem_seg, height, width))
    elif record.get("annotations"):
        h0, w0 = record["height"], record["width"]
        annotations = [dict(a) for a in record["annotations"]]
        for a in annotations:
            a["bbox"] = BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
            a["bbox_mode"] = BoxMode.XYXY_ABS
        target = annotations_to_instances(annotations, (h0, w0), mask_format="bitmask")
        scale = torch.tensor([width / w0, height / h0] * 2)
        instances = Instances((height, width), gt_classes=target.gt_classes)
        instances.gt_boxes = target.gt_boxes.tensor * scale
        if target.has("gt_masks"):
            masks = target.gt_masks.tensor.numpy()
            instances.gt_masks = _nearest_resize(masks.transpose(1, 2, 0), height, width).transpose(
                2, 0, 1
            )
        vis.draw_instances(instances)
    return vis.get_image()


def _prediction_panels(
    output: dict, image: np.ndarray, metadata: Any, score_threshold: float
) -> list[tuple[str, Image.Image]]:
    panels = []
    if "instances" in output:
        instances = filter_instances(output["instances"].to("cpu"), score_threshold, None)
        panels.append(
            (
                f"instances >= {score_threshold:g}",
                Visualizer(image, metadata).draw_instances(instances).get_image(),
            )
        )
    if "panoptic_seg" in output:
        ids, segments_info = output["panoptic_seg"]
        vis = Visualizer(image, metadata)
        vis.draw_panoptic_seg(ids.cpu(), segments_info)
        panels.append(("panoptic", vis.get_image()))
    elif "sem_seg" in output:
        vis = Visualizer(image, metadata)
        vis.draw_sem_seg(output["sem_seg"].argmax(0).cpu())
        panels.append(("semantic", vis.get_image()))
    return panels


def _grid(rows: list[list[tuple[str, Image.Image]]]) -> Image.Image:
    """Paste captioned panels into rows (all panels of a row have the image's size)."""
    font = load_font(12)
    num_columns = max(len(r) for r in rows)
    cell_w = max(p.width for r in rows for _, p in r)
    cell_h = max(p.height for r in rows for _, p in r) + _CAPTION_HEIGHT
    canvas = Image.new(
        "RGB",
        (num_columns * (cell_w + _GAP) + _GAP, len(rows) * (cell_h + _GAP) + _GAP),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        for c, (caption, panel) in enumerate(row):
            x, y = _GAP + c * (cell_w + _GAP), _GAP + r * (cell_h + _GAP)
            draw.text((x + 2, y + 2), caption, fill=(0, 0, 0), font=font)
            canvas.paste(panel, (x, y + _CAPTION_HEIGHT))
    return canvas


@torch.no_grad()
def draw_predictions(
    model: nn.Module,
    records: Sequence[dict],
    augmentations: Sequence[Any],
    metadata: Any,
    *,
    input_format: str = "RGB",
    score_threshold: float = 0.5,
    min_display_size: int = 256,
) -> Image.Image:
    """Run ``model`` on dataset records and draw ground truth and predictions side by side.

    Args:
        model: a detectron2-style model (list of input dicts -> list of output dicts).
        records: dataset dicts (``file_name`` or a synthetic ``scene``; ``segments_info`` or
            ``annotations`` for the ground-truth column).
        augmentations: test-time augmentations (the evaluation resize).
        metadata: class names and colours.
        input_format: "RGB" or "BGR", the model's input channel order.
        score_threshold: instances below it are not drawn.
        min_display_size: images with a shorter side are enlarged to it for drawing; the model
            still sees the evaluation input, only its outputs are requested at display size.

    Returns:
        The grid picture (one row per record).
    """
    model = unwrap_model(model)
    rows = []
    with inference_context(model):
        for record in records:
            image = load_image(record, "RGB")
            height, width = image.shape[:2]
            factor = max(1.0, min_display_size / min(height, width))
            shown = (round(height * factor), round(width * factor))
            inputs = model_input(image, augmentations, input_format)
            inputs.update(height=shown[0], width=shown[1])
            output = model([inputs])[0]
            display = np.asarray(Image.fromarray(image).resize(shown[::-1], Image.BILINEAR))
            row = [("ground truth", _ground_truth(record, display, metadata))]
            row += _prediction_panels(output, display, metadata, score_threshold)
            rows.append(row)
    return _grid(rows)


class VisualizePredictions(HookBase):
    """Write ``draw_predictions`` pictures every ``period`` iterations and after training.

    Args:
        model: the trained model (DDP-wrapped is fine; the inner module is used).
        records: the validation records to draw (a few).
        augmentations, metadata, input_format, score_threshold, min_display_size: see
            ``draw_predictions``.
        output_dir: folder of the PNG files.
        period: 0 draws only after training.
    """

    def __init__(
        self,
        model: nn.Module,
        records: Sequence[dict],
        augmentations: Sequence[Any],
        metadata: Any,
        output_dir: str,
        *,
        period: int = 0,
        input_format: str = "RGB",
        score_threshold: float = 0.5,
        min_display_size: int = 256,
    ) -> None:
        self._model = model
        self._records = list(records)
        self._augmentations = list(augmentations)
        self._metadata = metadata
        self._output_dir = output_dir
        self._period = period
        self._options = dict(
            input_format=input_format,
            score_threshold=score_threshold,
            min_display_size=min_display_size,
        )

    def write(self, file_name: str) -> str:
        """Draw and save ``<output_dir>/<file_name>``; returns its path."""
        picture = draw_predictions(
            self._model, self._records, self._augmentations, self._metadata, **self._options
        )
        PathManager.mkdirs(self._output_dir)
        path = os.path.join(self._output_dir, file_name)
        with PathManager.open(path, "wb") as f:
            picture.save(f, format="PNG")
        logger.info(f"Prediction picture of {len(self._records)} validation images: {path}")
        return path

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if self._period > 0 and done % self._period == 0 and done != self.trainer.max_iter:
            self.write(f"iter_{done:07d}.png")

    def after_train(self) -> None:
        # a finished loop leaves trainer.iter at max_iter; a failed one below it: no picture then
        if self.trainer.iter >= self.trainer.max_iter:
            self.write(f"iter_{self.trainer.max_iter:07d}.png")
        del self._model


def build_visualize_hook(cfg: Any, model: nn.Module) -> VisualizePredictions | None:
    """The hook described by ``cfg.train.visualize`` (None when absent or disabled).

    Keys: ``enabled``, ``num_images`` (6), ``score_threshold`` (0.5), ``period`` (0),
    ``output_dir`` (``<train.output_dir>/predictions``), ``min_display_size`` (256). The images
    are the first ``num_images`` records of ``dataloader.test.dataset``.
    """
    if not try_get_key(cfg, "train.visualize.enabled", default=False):
        return None
    options = cfg.train.visualize
    num_images = int(options.get("num_images", 6))
    records = instantiate(cfg.dataloader.test.dataset)[:num_images]
    output_dir = options.get("output_dir") or os.path.join(cfg.train.output_dir, "predictions")
    return VisualizePredictions(
        model,
        records,
        inference_augmentations(cfg),
        _WithoutThingColors(config_metadata(cfg, unwrap_model(model))),
        output_dir,
        period=int(options.get("period", 0)),
        input_format=try_get_key(cfg, "dataloader.test.mapper.image_format", default="RGB"),
        score_threshold=float(options.get("score_threshold", 0.5)),
        min_display_size=int(options.get("min_display_size", 256)),
    )
