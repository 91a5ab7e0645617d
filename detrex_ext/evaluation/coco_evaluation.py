"""COCO box and mask AP through pycocotools, with detectron2's results format."""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import logging
import os
from typing import Any, Sequence

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

from detrex_ext.data.catalog import MetadataCatalog
from detrex_ext.data.datasets.coco import convert_to_coco_dict
from detrex_ext.structures import BitMasks, BoxMode, Instances, masks_to_tensor
from detrex_ext.utils import comm

from .evaluator import DatasetEvaluator

logger = logging.getLogger(__name__)

__all__ = ["COCOEvaluator", "instances_to_coco_json", "summarize_coco_eval"]

METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def instances_to_coco_json(instances: Instances, image_id: int) -> list[dict[str, Any]]:
    """Predicted ``Instances`` (``pred_boxes`` xyxy, ``scores``, ``pred_classes``, optional
    ``pred_masks [N, H, W]``) -> COCO result dicts with contiguous ``category_id``; masks are
    compressed RLE (a float mask counts where it is > 0.5)."""
    num = len(instances) if instances.get_fields() else 0
    if num == 0:
        return []
    has_mask = instances.has("pred_masks")
    masks = None
    if has_mask:
        masks = instances.pred_masks
        if hasattr(masks, "tensor") or hasattr(masks, "polygons"):  # any mask container
            masks = masks_to_tensor(masks, *instances.image_size)
        masks = masks > 0.5 if masks.is_floating_point() else masks.bool()
    if instances.has("pred_boxes"):
        boxes = instances.pred_boxes
        boxes = getattr(boxes, "tensor", boxes)  # Boxes-like or a tensor
    elif masks is not None:
        boxes = BitMasks(masks).get_bounding_boxes().tensor
    else:
        raise ValueError("predicted instances need pred_boxes or pred_masks")
    boxes = BoxMode.convert(
        boxes.detach().float().cpu(), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS
    ).tolist()
    scores = instances.scores.detach().float().cpu().tolist()
    classes = instances.pred_classes.detach().cpu().tolist()
    results = []
    for k in range(num):
        result = {
            "image_id": image_id,
            "category_id": int(classes[k]),
            "bbox": boxes[k],
            "score": scores[k],
        }
        if masks is not None:
            rle = mask_util.encode(np.asfortranarray(masks[k].cpu().numpy().astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            result["segmentation"] = rle
        results.append(result)
    return results


def summarize_coco_eval(coco_eval: COCOeval) -> dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl (in %) from an accumulated ``COCOeval``, at its largest
    ``maxDets``; NaN where nothing can be computed (same numbers as ``summarize()``)."""
    precision = coco_eval.eval["precision"]  # [T iou, R recall, K class, A area, M maxDets]
    iou_thrs = coco_eval.params.iouThrs

    def mean_ap(p: np.ndarray) -> float:
        valid = p[p > -1]
        return float(valid.mean() * 100) if valid.size else float("nan")

    iou50 = np.flatnonzero(np.isclose(iou_thrs, 0.5))
    iou75 = np.flatnonzero(np.isclose(iou_thrs, 0.75))
    return {
        "AP": mean_ap(precision[:, :, :, 0, -1]),
        "AP50": mean_ap(precision[iou50][:, :, :, 0, -1]),
        "AP75": mean_ap(precision[iou75][:, :, :, 0, -1]),
        "APs": mean_ap(precision[:, :, :, 1, -1]),
        "APm": mean_ap(precision[:, :, :, 2, -1]),
        "APl": mean_ap(precision[:, :, :, 3, -1]),
    }


class COCOEvaluator(DatasetEvaluator):
    """Box and mask AP of instance predictions, with pycocotools.

    Ground truth comes from the dataset's ``json_file`` metadata or, when it has none (e.g.
    generated data), from its dataset dicts converted to COCO format in memory. Predicted
    contiguous class ids are mapped back with ``thing_dataset_id_to_contiguous_id``.

    Args:
        dataset_name: a registered dataset.
        tasks: ``("bbox", "segm")`` or a subset; default: bbox, plus segm if masks are predicted.
        distributed: gather predictions from all processes (results on the main process).
        output_dir: where to write ``coco_instances_results.json`` (optional).
        max_dets_per_image: detections per image scored (default 100).
    """

    def __init__(
        self,
        dataset_name: str,
        tasks: Sequence[str] | None = None,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        max_dets_per_image: int | None = None,
        **unused: Any,
    ):
        unknown = set(unused) - {"use_fast_impl", "allow_cached_coco", "kpt_oks_sigmas"}
        if unknown:
            raise TypeError(f"COCOEvaluator got unexpected arguments {sorted(unknown)}")
        if tasks is not None and not set(tasks) <= {"bbox", "segm"}:
            raise ValueError(f"COCOEvaluator tasks must be among 'bbox', 'segm', got {tasks}")
        self._dataset_name = dataset_name
        self._tasks = tuple(tasks) if tasks is not None else None
        self._distributed = distributed
        self._output_dir = output_dir
        self._max_dets = [1, 10, max_dets_per_image or 100]
        self._metadata = MetadataCatalog.get(dataset_name)
        self._coco_api: COCO | None = None
        self._predictions: list[dict] = []

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            if "instances" in out:
                instances = out["instances"].to("cpu")
                self._predictions.append(
                    {
                        "image_id": inp["image_id"],
                        "instances": instances_to_coco_json(instances, inp["image_id"]),
                    }
                )

    def evaluate(self, img_ids: Sequence[int] | None = None) -> dict[str, dict[str, float]] | None:
        predictions = self._predictions
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        if not predictions:
            logger.warning("[COCOEvaluator] received no predictions with 'instances'")
            return {}
        results = list(itertools.chain.from_iterable(p["instances"] for p in predictions))
        results = self._to_dataset_ids(results)
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            with open(os.path.join(self._output_dir, "coco_instances_results.json"), "w") as f:
                json.dump(results, f)
        tasks = self._tasks or (
            ("bbox", "segm") if any("segmentation" in r for r in results) else ("bbox",)
        )
        tasks = self._tasks_with_ground_truth(tasks)
        evaluated_ids = (
            sorted({p["image_id"] for p in predictions}) if img_ids is None else list(img_ids)
        )
        return {task: self._evaluate_task(task, results, evaluated_ids) for task in tasks}

    def _tasks_with_ground_truth(self, tasks: Sequence[str]) -> tuple[str, ...]:
        """Mask AP needs ground-truth masks: without them it is skipped with a warning, or
        refused when ``tasks`` asked for it explicitly."""
        if "segm" not in tasks:
            return tuple(tasks)
        lacking = sum("segmentation" not in a for a in self._coco_gt().dataset["annotations"])
        if not lacking:
            return tuple(tasks)
        message = (
            f"{lacking} ground-truth annotations of {self._dataset_name!r} have no segmentation, "
            "so mask AP cannot be computed"
        )
        if self._tasks is not None:
            raise ValueError(f"{message}; evaluate with tasks=('bbox',)")
        logger.warning(f"{message}; only box AP is reported.")
        return tuple(t for t in tasks if t != "segm")

    def _to_dataset_ids(self, results: list[dict]) -> list[dict]:
        classes = self._metadata.get("thing_classes")
        id_map = self._metadata.get("thing_dataset_id_to_contiguous_id")
        num_classes = len(classes) if classes is not None else None
        reverse = {v: k for k, v in id_map.items()} if id_map else None
        for result in results:
            category = result["category_id"]
            if num_classes is not None and not 0 <= category < num_classes:
                raise ValueError(
                    f"A prediction has class={category}, but dataset {self._dataset_name!r} has "
                    f"{num_classes} thing_classes; the model's num_classes must match the "
                    "dataset's metadata"
                )
            if reverse is not None:
                result["category_id"] = reverse[category]
        return results

    def _coco_gt(self) -> COCO:
        if self._coco_api is None:
            json_file = self._metadata.get("json_file")
            with contextlib.redirect_stdout(io.StringIO()):
                if json_file and os.path.isfile(json_file):
                    self._coco_api = COCO(json_file)
                else:
                    logger.info("Converting %r to COCO format for evaluation", self._dataset_name)
                    coco = COCO()
                    coco.dataset = convert_to_coco_dict(self._dataset_name)
                    coco.createIndex()
                    self._coco_api = coco
        return self._coco_api

    def _evaluate_task(
        self, task: str, results: list[dict], img_ids: list[int]
    ) -> dict[str, float]:
        if task == "segm":
            missing = sum("segmentation" not in r for r in results)
            if missing:
                raise ValueError(f"{missing} predictions have no mask; cannot compute mask AP")
            # without boxes, pycocotools uses mask areas for the small/medium/large split
            results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
        if not results:
            logger.warning(
                "No predictions for %s; all %s metrics are NaN", self._dataset_name, task
            )
            return {m: float("nan") for m in METRICS}
        coco_gt = self._coco_gt()
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(copy.deepcopy(results))
            coco_eval = COCOeval(coco_gt, coco_dt, task)
            coco_eval.params.maxDets = self._max_dets
            coco_eval.params.imgIds = img_ids
            coco_eval.evaluate()
            coco_eval.accumulate()
        metrics = summarize_coco_eval(coco_eval)
        logger.info(
            "Evaluation results for %s:\n%s",
            task,
            tabulate([metrics], headers="keys", floatfmt=".3f"),
        )
        per_class = self._per_class_ap(coco_eval)
        metrics.update({f"AP-{name}": ap for name, ap in per_class.items()})
        return metrics

    def _per_class_ap(self, coco_eval: COCOeval) -> dict[str, float]:
        classes = self._metadata.get("thing_classes") or []
        precision = coco_eval.eval["precision"]
        if len(classes) != precision.shape[2]:
            return {}
        per_class = {}
        for k, name in enumerate(classes):
            p = precision[:, :, k, 0, -1]
            p = p[p > -1]
            per_class[name] = float(p.mean() * 100) if p.size else float("nan")
        rows = list(per_class.items())
        columns = min(6, 2 * len(rows))
        flat = list(itertools.chain(*rows))
        table = itertools.zip_longest(*[flat[i::columns] for i in range(columns)])
        logger.info(
            "Per-category AP:\n%s",
            tabulate(
                table, headers=["category", "AP"] * (columns // 2), floatfmt=".3f", numalign="left"
            ),
        )
        return per_class
