"""``COCOPanopticEvaluator``: PQ / SQ / RQ for all, thing and stuff classes."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
from PIL import Image
from tabulate import tabulate

from detrex_ext.data.catalog import DatasetCatalog, MetadataCatalog
from detrex_ext.data.detection_utils import id2rgb, load_pan_seg
from detrex_ext.utils import comm

from .evaluator import DatasetEvaluator
from .panoptic_quality import PQStat, pq_compute_single_image

logger = logging.getLogger(__name__)

__all__ = ["COCOPanopticEvaluator"]


class COCOPanopticEvaluator(DatasetEvaluator):
    """Panoptic quality of ``output["panoptic_seg"]`` against the dataset's panoptic labels.

    Statistics are accumulated image by image in ``process`` (ground truth read through the
    dataset dicts: PNG files or generated scenes), so no prediction is kept in memory, and
    summed over processes in ``evaluate``.

    ``panoptic_seg`` is ``(ids [H, W], segments_info)`` with ``segments_info`` a list of
    ``{id, category_id (contiguous), isthing}`` (0 = void), or ``(labels, None)`` where
    ``labels = class * label_divisor + instance`` and -1 is void.

    Args:
        dataset_name: a registered panoptic dataset.
        output_dir: if set, the predictions are also written there in COCO panoptic format
            (``panoptic_predictions/*.png`` and ``panoptic_predictions.json``).
    """

    def __init__(self, dataset_name: str, output_dir: str | None = None):
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        meta = MetadataCatalog.get(dataset_name)
        self._metadata = meta
        thing_map = meta.get("thing_dataset_id_to_contiguous_id") or {}
        stuff_map = meta.get("stuff_dataset_id_to_contiguous_id") or {}
        if not thing_map and not stuff_map:
            raise ValueError(
                f"dataset {dataset_name!r} has no thing/stuff_dataset_id_to_contiguous_id metadata; "
                "is it a panoptic dataset?"
            )
        self._thing_to_dataset = {v: k for k, v in thing_map.items()}
        self._stuff_to_dataset = {v: k for k, v in stuff_map.items()}
        names = {}
        for dataset_id, contiguous in stuff_map.items():
            names[dataset_id] = _class_name(meta.get("stuff_classes"), contiguous, dataset_id)
        for dataset_id, contiguous in thing_map.items():
            names[dataset_id] = _class_name(meta.get("thing_classes"), contiguous, dataset_id)
        self._categories = {
            dataset_id: {"isthing": int(dataset_id in thing_map), "name": names[dataset_id]}
            for dataset_id in sorted(set(thing_map) | set(stuff_map))
        }
        self._records: dict[Any, dict] | None = None
        self.reset()

    def reset(self) -> None:
        self._stat = PQStat()
        self._image_ids: list[Any] = []
        self._json_predictions: list[dict] = []

    def _ground_truth(self, image_id: Any) -> dict:
        if self._records is None:
            self._records = {r["image_id"]: r for r in DatasetCatalog.get(self._dataset_name)}
        try:
            return self._records[image_id]
        except KeyError:
            raise KeyError(
                f"image_id {image_id!r} is not in dataset {self._dataset_name!r}"
            ) from None

    def _to_dataset_segment(self, segment: dict) -> dict:
        segment = dict(segment)
        isthing = segment.pop("isthing", None)
        if isthing is None:  # already a dataset category id
            return segment
        table = self._thing_to_dataset if isthing else self._stuff_to_dataset
        category = segment["category_id"]
        if category not in table:
            kind = "thing" if isthing else "stuff"
            raise ValueError(
                f"A panoptic segment has {kind} class={category}, which dataset "
                f"{self._dataset_name!r} does not have ({len(table)} {kind} classes); the "
                "model's num_classes must match the dataset's metadata"
            )
        segment["category_id"] = table[category]
        return segment

    def _decode_label_map(self, labels: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        divisor = self._metadata.get("label_divisor")
        if divisor is None:
            raise ValueError(
                "panoptic_seg without segments_info needs the metadata 'label_divisor'"
            )
        segments = []
        thing_ids = set(self._thing_to_dataset)
        for label in np.unique(labels).tolist():
            if label == -1:
                continue
            category = label // divisor
            segments.append(
                {"id": label + 1, "category_id": category, "isthing": category in thing_ids}
            )
        return labels + 1, segments

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            if "panoptic_seg" not in out:
                continue
            ids, segments_info = out["panoptic_seg"]
            ids = ids.cpu().numpy() if hasattr(ids, "cpu") else np.asarray(ids)
            ids = ids.astype(np.int64)
            if segments_info is None:
                ids, segments_info = self._decode_label_map(ids)
            pred_segments = [self._to_dataset_segment(s) for s in segments_info]
            record = self._ground_truth(inp["image_id"])
            gt_ids = load_pan_seg(record)
            if gt_ids is None:
                raise ValueError(f"dataset {self._dataset_name!r} has no panoptic labels")
            gt_segments = [self._to_dataset_segment(s) for s in record["segments_info"]]
            self._stat += pq_compute_single_image(
                gt_ids, gt_segments, ids, pred_segments, self._categories
            )
            self._image_ids.append(inp["image_id"])
            if self._output_dir:
                self._write_prediction(inp["image_id"], ids, pred_segments)

    def _write_prediction(self, image_id: Any, ids: np.ndarray, segments: list[dict]) -> None:
        folder = os.path.join(self._output_dir, "panoptic_predictions")
        os.makedirs(folder, exist_ok=True)
        file_name = f"{image_id}.png"
        Image.fromarray(id2rgb(ids)).save(os.path.join(folder, file_name))
        self._json_predictions.append(
            {"image_id": image_id, "file_name": file_name, "segments_info": segments}
        )

    def evaluate(self) -> dict[str, dict[str, float]] | None:
        comm.synchronize()
        stats = comm.gather(self._stat, dst=0)
        image_ids = comm.gather(self._image_ids, dst=0)
        json_predictions = comm.gather(self._json_predictions, dst=0)
        if not comm.is_main_process():
            return {}
        total = PQStat()
        for stat in stats:
            total += stat
        num_images = sum(len(ids) for ids in image_ids)
        if num_images == 0:
            logger.warning("[COCOPanopticEvaluator] received no panoptic predictions")
            return {}
        if self._output_dir:
            with open(os.path.join(self._output_dir, "panoptic_predictions.json"), "w") as f:
                json.dump({"annotations": [p for part in json_predictions for p in part]}, f)
        results = {}
        rows = []
        for key, isthing in (("", None), ("_th", True), ("_st", False)):
            averages, per_class = total.pq_average(self._categories, isthing)
            for metric in ("PQ", "SQ", "RQ"):
                results[metric + key] = 100 * averages[metric.lower()]
            rows.append(
                [{"": "All", "_th": "Things", "_st": "Stuff"}[key]]
                + [100 * averages[m] for m in ("pq", "sq", "rq")]
                + [averages["n"]]
            )
            if isthing is None:
                all_classes = per_class
        logger.info(
            "Panoptic evaluation results on %d images:\n%s",
            num_images,
            tabulate(rows, headers=["", "PQ", "SQ", "RQ", "#categories"], floatfmt=".3f"),
        )
        class_rows = [
            [self._categories[c]["name"], 100 * v["pq"], 100 * v["sq"], 100 * v["rq"]]
            for c, v in all_classes.items()
            if total.pq_per_cat.get(c) is not None
        ]
        logger.info(
            "Per-category PQ:\n%s",
            tabulate(class_rows, headers=["category", "PQ", "SQ", "RQ"], floatfmt=".3f"),
        )
        return {"panoptic_seg": results}


def _class_name(classes: list[str] | None, index: int, dataset_id: int) -> str:
    if classes is not None and 0 <= index < len(classes):
        return classes[index]
    return str(dataset_id)
