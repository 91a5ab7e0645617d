"""``SemSegEvaluator``: mIoU, fwIoU, mACC and pACC from a confusion matrix."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
from tabulate import tabulate

from detrex_ext.data.catalog import DatasetCatalog, MetadataCatalog
from detrex_ext.data.detection_utils import load_sem_seg
from detrex_ext.utils import comm

from .evaluator import DatasetEvaluator

logger = logging.getLogger(__name__)

__all__ = ["SemSegEvaluator", "semantic_metrics"]


def semantic_metrics(confusion: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """Metrics (in %) from ``confusion[pred, gt]`` of shape ``[N+1, N+1]`` (last = ignored).

    Pixels with an ignored label are left out; so are pixels predicted as a class whose label
    is ignored. IoU_c = TP / (GT_c + Pred_c - TP); mIoU averages classes present in the ground
    truth or the predictions; fwIoU weights IoU by ground-truth frequency; ACC_c = TP / GT_c,
    mACC averages classes present in the ground truth; pACC = sum(TP) / sum(GT). Undefined
    values are NaN.
    """
    n = len(class_names)
    matrix = confusion[:n, :n].astype(np.float64)
    tp = np.diag(matrix)
    pos_gt = matrix.sum(axis=0)
    pos_pred = matrix.sum(axis=1)
    acc_valid = pos_gt > 0
    iou_valid = (pos_gt + pos_pred) > 0
    acc = np.full(n, np.nan)
    iou = np.full(n, np.nan)
    acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
    union = pos_gt + pos_pred - tp
    iou[iou_valid] = tp[iou_valid] / union[iou_valid]
    total_gt = pos_gt.sum()
    weights = pos_gt / total_gt if total_gt > 0 else np.zeros(n)
    results = {
        "mIoU": 100 * float(np.mean(iou[iou_valid])) if iou_valid.any() else float("nan"),
        "fwIoU": (
            100 * float(np.sum(iou[acc_valid] * weights[acc_valid]))
            if acc_valid.any()
            else float("nan")
        ),
    }
    for name, value in zip(class_names, iou):
        results[f"IoU-{name}"] = 100 * float(value)
    results["mACC"] = 100 * float(np.mean(acc[acc_valid])) if acc_valid.any() else float("nan")
    results["pACC"] = 100 * float(tp.sum() / total_gt) if total_gt > 0 else float("nan")
    for name, value in zip(class_names, acc):
        results[f"ACC-{name}"] = 100 * float(value)
    return results


class SemSegEvaluator(DatasetEvaluator):
    """Semantic segmentation metrics of ``output["sem_seg"]`` (``[C, H, W]`` scores; the argmax
    is the prediction) against the dataset's labels (``stuff_classes``, ``ignore_label``).

    The ground truth is found through the dataset dicts by ``file_name`` (label PNG or
    generated scene), as in detectron2, and must have the prediction's size.

    Args:
        dataset_name: a registered dataset with semantic labels.
        distributed: sum the confusion matrices of all processes.
        output_dir: if set, the results are also written to ``sem_seg_evaluation.json``.
        num_classes, ignore_label: override the metadata.
    """

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        num_classes: int | None = None,
        ignore_label: int | None = None,
        **unused: Any,
    ):
        unknown = set(unused) - {"sem_seg_loading_fn"}
        if unknown:
            raise TypeError(f"SemSegEvaluator got unexpected arguments {sorted(unknown)}")
        meta = MetadataCatalog.get(dataset_name)
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._class_names = list(meta.get("stuff_classes") or [])
        self._num_classes = num_classes if num_classes is not None else len(self._class_names)
        if self._num_classes == 0:
            raise ValueError(
                f"dataset {dataset_name!r} has no stuff_classes; cannot evaluate sem_seg"
            )
        if len(self._class_names) != self._num_classes:
            self._class_names = [str(i) for i in range(self._num_classes)]
        self._ignore_label = (
            ignore_label if ignore_label is not None else meta.get("ignore_label", 255)
        )
        self._records: dict[str, dict] | None = None
        self.reset()

    def reset(self) -> None:
        size = self._num_classes + 1
        self._confusion = np.zeros((size, size), dtype=np.int64)

    def _ground_truth(self, file_name: str) -> np.ndarray:
        if self._records is None:
            self._records = {r["file_name"]: r for r in DatasetCatalog.get(self._dataset_name)}
        record = self._records.get(file_name)
        if record is None:
            raise KeyError(f"{file_name!r} is not an image of dataset {self._dataset_name!r}")
        label = load_sem_seg(record)
        if label is None:
            raise ValueError(
                f"{file_name!r} of dataset {self._dataset_name!r} has no semantic label"
            )
        return label

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        n = self._num_classes
        for inp, out in zip(inputs, outputs):
            if "sem_seg" not in out:
                continue
            scores = out["sem_seg"]
            if scores.shape[0] != n:
                raise ValueError(
                    f"sem_seg output has {scores.shape[0]} channels but dataset "
                    f"{self._dataset_name!r} has {n} classes; the model's num_classes must match"
                )
            pred = scores.argmax(dim=0).cpu().numpy().astype(np.int64)
            gt = self._ground_truth(inp["file_name"]).astype(np.int64)
            if gt.shape != pred.shape:
                raise ValueError(
                    f"sem_seg prediction of {inp['file_name']!r} has size {pred.shape}, its label "
                    f"{gt.shape}; predictions must be at the original image size"
                )
            gt[gt == self._ignore_label] = n
            if gt.min() < 0 or gt.max() > n:
                raise ValueError(
                    f"label of {inp['file_name']!r} has values outside 0..{n - 1} and {self._ignore_label}"
                )
            self._confusion += np.bincount(
                (n + 1) * pred.reshape(-1) + gt.reshape(-1), minlength=(n + 1) ** 2
            ).reshape(n + 1, n + 1)

    def evaluate(self) -> dict[str, dict[str, float]] | None:
        confusion = self._confusion
        if self._distributed:
            comm.synchronize()
            matrices = comm.gather(confusion, dst=0)
            if not comm.is_main_process():
                return {}
            confusion = np.sum(matrices, axis=0)
        if confusion.sum() == 0:
            logger.warning("[SemSegEvaluator] received no sem_seg predictions")
            return {}
        results = semantic_metrics(confusion, self._class_names)
        main = {k: v for k, v in results.items() if "-" not in k}
        logger.info(
            "Semantic segmentation results:\n%s", tabulate([main], headers="keys", floatfmt=".3f")
        )
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            with open(os.path.join(self._output_dir, "sem_seg_evaluation.json"), "w") as f:
                json.dump(results, f)
        return {"sem_seg": results}
