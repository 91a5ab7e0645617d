"""Score an exported file with a config's own test loader and evaluators, beside the eager model.

    from detrex_ext.export.evaluation import ExportedModel, compare_accuracy

    eager, exported = compare_accuracy(cfg, model, "model.onnx")   # {task: {metric: value}} each

:class:`ExportedModel` makes an ``.onnx`` (ONNX Runtime) or ``.pt2`` file look like a detectron2
model: it takes the test mapper's ``list[dict]`` (images already resized by the config's test
augmentation), pads each image into the exported canvas (scaling it down first if it does not
fit, as the ONNX runtime does), runs the graph and maps the final predictions back to each
input's ``height`` x ``width`` with the runtime's own code (``map_outputs``), in the eager
model's output structures. The eager model pads to a multiple of 32 instead of the canvas, so
both see identical inputs only when the test images have the canvas size (as in the synthetic
demo); other sizes give the runtime's (documented) behaviour.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detrex_ext.structures import Boxes, Instances

from .image_ops import fitted_size, pad_to_canvas, resize_image
from .onnx_predictor import map_outputs

__all__ = ["ExportedModel", "compare_accuracy"]


class ExportedModel:
    """An exported file called like the eager model on ``list[dict]`` inputs (evaluation only)."""

    def __init__(self, path: str | os.PathLike) -> None:
        from .verify import read_metadata

        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        if not self.metadata["outputs"].get("postprocess"):
            raise ValueError(f"{self.path} has raw outputs: evaluating needs final predictions")
        spec = self.metadata["input"]
        self.canvas = (int(spec["height"]), int(spec["width"]))
        self.pad_value = spec["pad_value"]
        self.num_classes = int(self.metadata.get("model", {}).get("num_classes", 0))
        self._program = None
        self._predictor = None

    def _run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        if self.path.suffix == ".pt2":
            if self._program is None:
                from .exporter import load_program

                self._program = load_program(self.path)[0].module()
            names = self.metadata["outputs"]["names"]
            with torch.no_grad():
                arrays = self._program(torch.from_numpy(images))
            return {name: array.numpy() for name, array in zip(names, arrays)}
        if self._predictor is None:
            from .onnx_predictor import OnnxPredictor

            self._predictor = OnnxPredictor(self.path)
        return self._predictor.run(images)

    def _canvas(self, image: torch.Tensor) -> tuple[np.ndarray, int, int]:
        rgb = image.permute(1, 2, 0).cpu().numpy()
        height, width = rgb.shape[:2]
        new_h, new_w = fitted_size(height, width, None, self.canvas)
        rgb = resize_image(np.ascontiguousarray(rgb), (new_h, new_w))
        return pad_to_canvas(rgb, self.canvas, self.pad_value), new_h, new_w

    def _to_model_outputs(self, mapped: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        if "instances" in mapped:
            found = mapped["instances"]
            instances = Instances(found.image_size)
            instances.pred_boxes = Boxes(torch.from_numpy(found.pred_boxes.astype(np.float32)))
            instances.scores = torch.from_numpy(found.scores.astype(np.float32))
            instances.pred_classes = torch.from_numpy(found.pred_classes)
            instances.pred_masks = torch.from_numpy(found.pred_masks).float()
            result["instances"] = instances
        if "sem_seg" in mapped:  # class ids as one-hot scores (their argmax is the map)
            labels = torch.from_numpy(mapped["sem_seg"].astype(np.int64))
            one_hot = torch.nn.functional.one_hot(
                labels, max(self.num_classes, int(labels.max()) + 1)
            )
            result["sem_seg"] = one_hot.permute(2, 0, 1).float()
        if "panoptic_seg" in mapped:
            ids, segments_info = mapped["panoptic_seg"]
            result["panoptic_seg"] = (torch.from_numpy(ids.astype(np.int32)), segments_info)
        return result

    def __call__(self, batched_inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        prepared = [self._canvas(x["image"]) for x in batched_inputs]
        outputs = self._run(np.stack([canvas for canvas, _, _ in prepared]))
        results = []
        for b, (x, (_, new_h, new_w)) in enumerate(zip(batched_inputs, prepared)):
            sizes = {
                "height": int(x.get("height", x["image"].shape[-2])),
                "width": int(x.get("width", x["image"].shape[-1])),
                "resized_h": new_h,
                "resized_w": new_w,
            }
            out = {name: array[b] for name, array in outputs.items()}
            results.append(self._to_model_outputs(map_outputs(out, sizes, self.metadata)))
        return results


def compare_accuracy(
    cfg: Any, model: torch.nn.Module, path: str | os.PathLike
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(eager results, exported results)`` of ``cfg.dataloader.test`` scored by
    ``cfg.dataloader.evaluator`` (each built anew), ``{task: {metric: value}}``."""
    from detrex_ext.config import instantiate
    from detrex_ext.evaluation import inference_on_dataset

    results = []
    for candidate in (model, ExportedModel(path)):
        loader = instantiate(cfg.dataloader.test)
        evaluator = instantiate(cfg.dataloader.evaluator)
        results.append(inference_on_dataset(candidate, loader, evaluator))
    return results[0], results[1]
