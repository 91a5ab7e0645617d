"""Run an exported ONNX model with ONNX Runtime and numpy alone (PyTorch is never imported).

    from detrex_ext.export import OnnxPredictor

    predictor = OnnxPredictor("maskdino_r50.onnx")
    outputs = predictor("street.jpg", score_threshold=0.3)      # one dict
    outputs = predictor([array_rgb, pil_image])                 # a list of dicts

The call matches the PyTorch ``Predictor``: image paths, HWC uint8 RGB arrays or PIL images in
(read with ``detrex_ext.utils.image_io``); every image gets the config's test-time resize, is
scaled down further if it would not fit the exported size, and is padded with the pixel mean
(about zero after the in-graph normalisation, as the Predictor's zero padding). The outputs are
mapped back to the original image size, in detectron2's names:

* ``instances``: :class:`InstancePredictions` with ``pred_boxes`` ``[N, 4]`` (xyxy pixels),
  ``scores``, ``pred_classes`` and ``pred_masks`` (bool ``[N, H, W]``), sorted by score;
* ``sem_seg``: int ``[H, W]`` class map (the PyTorch Predictor returns the ``[C, H, W]`` scores
  whose argmax this is);
* ``panoptic_seg``: ``(int [H, W] segment ids, segments_info)``.

A model exported with raw outputs gives its raw arrays per image, unmapped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detrex_ext.utils.image_io import ImageInput, load_image_rgb
from detrex_ext.utils.prediction_filters import check_score_threshold, check_top_k

from .deps import require
from .image_ops import prepare_image, resize_bilinear, resize_nearest
from .metadata import METADATA_KEY, check_config, parse_metadata

__all__ = ["InstancePredictions", "OnnxPredictor", "map_outputs", "mask_threshold"]


class InstancePredictions:
    """Instances of one image as numpy arrays, with the ``Instances`` calls drawing code uses
    (``len``, ``get_fields``, ``has``, indexing, attribute access)."""

    def __init__(self, image_size: tuple[int, int], **fields: np.ndarray) -> None:
        self.image_size = image_size
        self._fields = dict(fields)

    def __len__(self) -> int:
        return len(next(iter(self._fields.values()))) if self._fields else 0

    def __getattr__(self, name: str) -> np.ndarray:
        fields = self.__dict__.get("_fields", {})
        if name in fields:
            return fields[name]
        raise AttributeError(f"no field {name!r}; fields: {sorted(fields)}")

    def __getitem__(self, index: Any) -> InstancePredictions:
        return InstancePredictions(
            self.image_size, **{k: v[index] for k, v in self._fields.items()}
        )

    def get_fields(self) -> dict[str, np.ndarray]:
        return dict(self._fields)

    def has(self, name: str) -> bool:
        return name in self._fields

    def __repr__(self) -> str:
        return f"InstancePredictions(num_instances={len(self)}, image_size={self.image_size})"


def mask_threshold(metadata: dict[str, Any]) -> float:
    """The threshold of the file's float instance masks: 0 for logits, 0.5 for probabilities."""
    if metadata["outputs"].get("mask_format") == "logits":
        return 0.0
    return metadata["outputs"].get("thresholds", {}).get("mask_threshold", 0.5)


def _instances(out, sizes, metadata, threshold, top_k) -> InstancePredictions:
    valid = out["instance_valid"].astype(bool)
    scores = out["instance_scores"][valid]
    order = np.argsort(-scores, kind="stable")
    if threshold is not None:
        order = order[scores[order] >= threshold]
    if top_k is not None:
        order = order[:top_k]
    rh, rw, height, width = (sizes[k] for k in ("resized_h", "resized_w", "height", "width"))
    boxes = out["instance_boxes"][valid][order]
    boxes = boxes * np.array([width / rw, height / rh] * 2, dtype=np.float32)
    masks = out["instance_masks"][valid][order][:, :rh, :rw]
    if masks.dtype == np.bool_:
        masks = resize_nearest(masks, (height, width))
    else:  # logits or probabilities: resized, then thresholded (smooth edges when upsampling)
        threshold = mask_threshold(metadata)
        masks = resize_bilinear(masks.astype(np.float32), (height, width)) > threshold
    return InstancePredictions(
        (height, width),
        pred_boxes=boxes,
        scores=scores[order],
        pred_classes=out["instance_classes"][valid][order].astype(np.int64),
        pred_masks=masks,
    )


def map_outputs(
    out: dict[str, np.ndarray],
    sizes: dict[str, int],
    metadata: dict[str, Any],
    score_threshold: float | None = None,
    top_k: int | None = None,
) -> dict[str, Any]:
    """One image's graph outputs (no batch axis) mapped from the canvas to the original image.

    Args:
        out: output name -> array of one image.
        sizes: ``height``, ``width`` (original) and ``resized_h``, ``resized_w`` (the image's
            extent in the canvas).
        metadata: the file's metadata.
        score_threshold, top_k: instance filtering (after sorting by score).

    Returns:
        ``instances`` / ``sem_seg`` / ``panoptic_seg`` as the model switches them on; the raw
        outputs unchanged for a raw export.
    """
    if not metadata["outputs"].get("postprocess", False):
        return out
    rh, rw = sizes["resized_h"], sizes["resized_w"]
    size = (sizes["height"], sizes["width"])
    result: dict[str, Any] = {}
    if "instance_scores" in out:
        result["instances"] = _instances(out, sizes, metadata, score_threshold, top_k)
    if "sem_seg" in out:
        result["sem_seg"] = resize_nearest(out["sem_seg"][:rh, :rw], size)
    if "panoptic_seg" in out:
        ids = resize_nearest(out["panoptic_seg"][:rh, :rw], size)
        rows = out["panoptic_segments"]
        segments_info = [
            {"id": int(row[1]), "isthing": bool(row[3]), "category_id": int(row[2])}
            for row in rows[rows[:, 0] > 0]
        ]
        result["panoptic_seg"] = (ids, sorted(segments_info, key=lambda s: s["id"]))
    return result


class OnnxPredictor:
    """Images in, detectron2-style outputs out, through an ONNX file written by
    ``tools/export_model.py``.

    Args:
        path: the ``.onnx`` file.
        config: optional config name or path; raises when the file was exported from another.
        score_threshold: drop instances scoring below this (None keeps all).
        top_k: keep at most this many instances per image (None keeps all).
        batch_size: images per run when a list is given.
        providers: ONNX Runtime execution providers (default: CPU).
        num_threads: intra-op threads (default: ONNX Runtime's choice).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        config: str | None = None,
        score_threshold: float | None = None,
        top_k: int | None = None,
        batch_size: int = 1,
        providers: Sequence[str] | None = None,
        num_threads: int | None = None,
    ) -> None:
        check_score_threshold(score_threshold)
        check_top_k(top_k)
        ort = require("onnxruntime", "The ONNX predictor")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX file {str(path)!r} does not exist")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
        self.session = ort.InferenceSession(
            str(path), options, providers=list(providers or ["CPUExecutionProvider"])
        )
        custom = self.session.get_modelmeta().custom_metadata_map
        self.metadata = parse_metadata(custom.get(METADATA_KEY), str(path))
        check_config(self.metadata, config, str(path))
        self.path = path
        self.score_threshold = score_threshold
        self.top_k = top_k
        self.batch_size = batch_size
        spec = self.metadata["input"]
        self.input_name = spec["name"]
        self.input_size = (int(spec["height"]), int(spec["width"]))
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def class_metadata(self) -> dict[str, Any]:
        """Class names and colours (``thing_classes``, ``stuff_classes``...): drawing metadata."""
        return self.metadata["classes"]

    # ------------------------------------------------------------------ graph
    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The graph on a prepared batch: uint8 ``[B, 3, H, W]`` at the exported size."""
        expected = (3, *self.input_size)
        if images.ndim != 4 or images.dtype != np.uint8 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"{self.path.name} takes uint8 images of shape [B, {expected[0]}, {expected[1]}, "
                f"{expected[2]}] (exported size), got {images.dtype} {tuple(images.shape)}; "
                "call the predictor on images of any size to have them resized and padded"
            )
        arrays = self.session.run(None, {self.input_name: images})
        return dict(zip(self.output_names, arrays))

    def preprocess(self, image: ImageInput) -> tuple[np.ndarray, dict[str, int]]:
        """One image as the graph input ``[3, H, W]`` and its sizes (original and resized)."""
        return prepare_image(load_image_rgb(image), self.metadata["input"])

    def postprocess(
        self,
        out: dict[str, np.ndarray],
        sizes: dict[str, int],
        score_threshold: float | None = None,
        top_k: int | None = None,
    ) -> dict[str, Any]:
        """One image's graph outputs (batch axis removed) at the original image size."""
        return map_outputs(out, sizes, self.metadata, score_threshold, top_k)

    def __call__(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        score_threshold: float | None = None,
        top_k: int | None = None,
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """Predict one image (returns a dict) or a list of images (returns a list of dicts)."""
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        check_score_threshold(score_threshold)
        check_top_k(top_k)
        threshold = self.score_threshold if score_threshold is None else score_threshold
        top_k = self.top_k if top_k is None else top_k
        results: list[dict[str, Any]] = []
        for start in range(0, len(items), self.batch_size):
            prepared = [self.preprocess(image) for image in items[start : start + self.batch_size]]
            batch = self.run(np.stack([canvas for canvas, _ in prepared]))
            for b, (_, sizes) in enumerate(prepared):
                out = {name: array[b] for name, array in batch.items()}
                results.append(self.postprocess(out, sizes, threshold, top_k))
        return results[0] if single else results
