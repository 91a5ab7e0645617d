"""The whole pipeline: catalog -> mapper -> loader -> model -> evaluators, also on 2 processes."""

from __future__ import annotations

import json

import pytest
import torch
import torch.multiprocessing as mp
from scipy import ndimage

from detrex_ext.data import (
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    register_synthetic_shapes,
)
from detrex_ext.data import transforms as T
from detrex_ext.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
    flatten_results_dict,
    inference_on_dataset,
)
from detrex_ext.structures import BitMasks, Instances
from detrex_ext.utils import comm


class ColorRuleModel(torch.nn.Module):
    """Segments the synthetic shapes from pixel colours alone (no ground truth): saturated
    red / green / blue pixels are circle / square / triangle, connected components are
    instances; other pixels are sky when blue dominates, else ground. Works at the resized
    input and returns outputs at the original size, as a detector does."""

    def forward(self, batch):
        return [self._predict(d) for d in batch]

    def _predict(self, d):
        image = d["image"].float()[None]
        image = torch.nn.functional.interpolate(image, (d["height"], d["width"]), mode="bilinear")[
            0
        ]
        r, g, b = image
        saturated = image.amax(0) - image.amin(0) > 90
        classes = torch.where(b > r + 30, 3, 4)
        classes = torch.where(saturated, image.argmax(0), classes)
        ids = torch.zeros_like(classes)
        segments, masks, labels = [], [], []
        for stuff in (3, 4):
            if (classes == stuff).any():
                ids[classes == stuff] = len(segments) + 1
                segments.append({"id": len(segments) + 1, "category_id": stuff, "isthing": False})
        for thing in range(3):
            components, count = ndimage.label((classes == thing).numpy())
            for k in range(1, count + 1):
                mask = torch.from_numpy(components == k)
                if mask.sum() < 20:
                    continue
                ids[mask] = len(segments) + 1
                segments.append({"id": len(segments) + 1, "category_id": thing, "isthing": True})
                masks.append(mask)
                labels.append(thing)
        instances = Instances((d["height"], d["width"]))
        instances.pred_masks = (
            torch.stack(masks)
            if masks
            else torch.zeros(0, d["height"], d["width"], dtype=torch.bool)
        )
        instances.pred_boxes = BitMasks(instances.pred_masks).get_bounding_boxes()
        instances.scores = torch.ones(len(masks))
        instances.pred_classes = torch.tensor(labels, dtype=torch.int64)
        sem_seg = torch.nn.functional.one_hot(classes, 5).permute(2, 0, 1).float()
        return {"instances": instances, "panoptic_seg": (ids, segments), "sem_seg": sem_seg}


def _evaluate(name: str) -> dict:
    mapper = DatasetMapper(is_train=False, augmentations=[T.ResizeShortestEdge(160, 400)])
    loader = build_detection_test_loader(name, mapper=mapper, batch_size=2)
    evaluator = DatasetEvaluators(
        [COCOEvaluator(name), COCOPanopticEvaluator(name), SemSegEvaluator(name)]
    )
    return inference_on_dataset(ColorRuleModel(), loader, evaluator)


def test_pipeline_scores_a_colour_rule_model():
    register_synthetic_shapes("pipeline_syn", num_images=6, image_size=(96, 120), seed=11)
    assert MetadataCatalog.get("pipeline_syn").evaluator_type == "coco_panoptic_seg"
    results = _evaluate("pipeline_syn")
    assert set(results) == {"bbox", "segm", "panoptic_seg", "sem_seg"}
    # the model sees resized images: near-perfect, not perfect
    assert 80 < results["segm"]["AP"] < 100 and results["bbox"]["AP50"] > 90
    assert 80 < results["panoptic_seg"]["PQ"] <= 100
    assert 90 < results["sem_seg"]["mIoU"] < 100
    # a model whose outputs are misaligned by a flip does much worse
    flipped = ColorRuleModel()
    original = flipped._predict
    flipped._predict = lambda d: original({**d, "image": d["image"].flip(-1)})
    mapper = DatasetMapper(is_train=False, augmentations=[T.ResizeShortestEdge(160, 400)])
    loader = build_detection_test_loader("pipeline_syn", mapper=mapper)
    bad = inference_on_dataset(flipped, loader, SemSegEvaluator("pipeline_syn"))
    assert bad["sem_seg"]["mIoU"] < results["sem_seg"]["mIoU"] - 10


def _distributed_worker(rank: int, world_size: int, init_file: str, out_file: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        register_synthetic_shapes("pipeline_syn", num_images=6, image_size=(96, 120), seed=11)
        shard = [
            d["image_id"] for batch in build_detection_test_loader("pipeline_syn") for d in batch
        ]
        results = _evaluate("pipeline_syn")
        shards = comm.all_gather(shard)
        if rank == 0:
            with open(out_file, "w") as f:
                json.dump({"results": results, "shards": shards}, f)
    finally:
        comm.destroy_process_group()


@pytest.mark.slow
def test_distributed_evaluation_equals_single_process(tmp_path):
    register_synthetic_shapes("pipeline_syn", num_images=6, image_size=(96, 120), seed=11)
    single = _evaluate("pipeline_syn")
    out_file = str(tmp_path / "results.json")
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), out_file), nprocs=2, join=True)
    with open(out_file) as f:
        distributed = json.load(f)
    assert distributed["shards"] == [[0, 1, 2], [3, 4, 5]]
    flat = flatten_results_dict(single)
    assert flatten_results_dict(distributed["results"]) == pytest.approx(flat, nan_ok=True)
