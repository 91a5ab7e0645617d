"""Evaluators with detectron2's reset/process/evaluate protocol."""

from .coco_evaluation import COCOEvaluator, instances_to_coco_json, summarize_coco_eval
from .evaluator import DatasetEvaluator, DatasetEvaluators, inference_context, inference_on_dataset
from .panoptic_evaluation import COCOPanopticEvaluator
from .panoptic_quality import PQStat, pq_compute_single_image
from .sem_seg_evaluation import SemSegEvaluator, semantic_metrics
from .testing import flatten_results_dict, print_csv_format, verify_results

__all__ = [
    "COCOEvaluator",
    "COCOPanopticEvaluator",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "PQStat",
    "SemSegEvaluator",
    "flatten_results_dict",
    "inference_context",
    "inference_on_dataset",
    "instances_to_coco_json",
    "pq_compute_single_image",
    "print_csv_format",
    "semantic_metrics",
    "summarize_coco_eval",
    "verify_results",
]
