"""The "bring your own COCO-format data" config on real images (../shared/datasets/coco_mini):
paths from overrides or $DETREX_DATASETS, the class count checked against the json, and a short
training + evaluation through ``tools/train_net.py`` at reduced resolution."""

from __future__ import annotations

import json
import math

import pytest
import torch
from e2e_helpers import CONFIGS, final_evaluation, read_metrics, run_train_net

from detrex_ext.config import LazyConfig, instantiate
from detrex_ext.data import MetadataCatalog, catalog_snapshot

pytestmark = pytest.mark.slow

CONFIG = "maskdino_r50_custom_coco_instance_seg.py"
# a smaller Mask DINO (same architecture) so that CPU steps take about a second
SMALL_MODEL = [
    "model.num_queries=20",
    "model.sem_seg_head.pixel_decoder.transformer_enc_layers=1",
    "model.sem_seg_head.transformer_predictor.dec_layers=2",
    "model.sem_seg_head.transformer_predictor.dn_num=10",
    "model.criterion.num_points=256",
]
NUM_VAL_IMAGES = 6


def _load(*overrides: str):
    cfg = LazyConfig.load(str(CONFIGS / CONFIG))
    return LazyConfig.apply_overrides(cfg, list(overrides))


def _write_subset(source, target, num_images: int, categories=None) -> list[int]:
    """A COCO json with the first ``num_images`` images of ``source`` (and their annotations);
    returns their ids."""
    data = json.loads(source.read_text())
    images = sorted(data["images"], key=lambda im: im["id"])[:num_images]
    ids = {im["id"] for im in images}
    data["images"] = images
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    if categories is not None:
        data["categories"] = categories
    target.write_text(json.dumps(data))
    return sorted(ids)


def test_data_root_comes_from_detrex_datasets(coco_mini_root, tmp_path, monkeypatch):
    (tmp_path / "coco").symlink_to(coco_mini_root, target_is_directory=True)
    monkeypatch.setenv("DETREX_DATASETS", str(tmp_path))
    cfg = _load()
    with catalog_snapshot():
        records = instantiate(cfg.dataloader.test.dataset)
        metadata = MetadataCatalog.get("custom_coco_val")
        assert len(metadata.thing_classes) == 80 and metadata.thing_classes[0] == "person"
    assert len(records) == 100  # coco_mini's val2017, empty images kept for evaluation
    assert all(r["file_name"].startswith(str(tmp_path / "coco" / "val2017")) for r in records)


def test_num_classes_is_checked_against_the_training_json(coco_mini_root, tmp_path):
    """Your own classes: 2 categories with arbitrary ids; model.num_classes must say 2."""
    categories = [{"id": 7, "name": "train"}, {"id": 1, "name": "person"}]
    source = coco_mini_root / "annotations" / "instances_train2017.json"
    data = json.loads(source.read_text())
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] in (1, 7)]
    data["categories"] = categories
    (tmp_path / "train.json").write_text(json.dumps(data))
    own_data = [
        f"dataset.train_json={tmp_path / 'train.json'}",
        f"dataset.train_images={coco_mini_root / 'train2017'}",
        "dataset.train_name=two_class_train",
        *SMALL_MODEL,
    ]
    with catalog_snapshot():
        with pytest.raises(
            Exception, match=r"model.num_classes=80 but dataset 'two_class_train' has 2"
        ):
            instantiate(_load(*own_data).model)
        model = instantiate(_load(*own_data, "model.num_classes=2").model)
        assert model.sem_seg_head.predictor.class_embed.out_features == 2
        assert model.criterion.num_classes == 2
        # contiguous ids follow the category ids: person (1) -> 0, train (7) -> 1
        assert MetadataCatalog.get("two_class_train").thing_classes == ["person", "train"]


def test_custom_config_trains_and_evaluates_on_coco_mini(coco_mini_root, tmp_path):
    val_json = tmp_path / "val_subset.json"
    val_ids = _write_subset(
        coco_mini_root / "annotations" / "instances_val2017.json", val_json, NUM_VAL_IMAGES
    )
    output_dir = tmp_path / "out"
    run_train_net(
        CONFIG,
        f"dataset.root={coco_mini_root}",
        f"dataset.val_json={val_json}",
        f"train.output_dir={output_dir}",
        "train.init_checkpoint=",  # no ImageNet download in tests
        "train.device=cpu",
        "train.amp.enabled=False",
        "train.max_iter=3",
        "train.log_period=1",
        "train.visualize.num_images=1",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        "dataloader.train.mapper.image_size=128",
        "dataloader.test.mapper.augmentations.0.short_edge_length=128",
        "dataloader.test.mapper.augmentations.0.max_size=213",
        *SMALL_MODEL,
    )
    records = read_metrics(output_dir)
    assert all(math.isfinite(r["total_loss"]) for r in records if "total_loss" in r)
    results = final_evaluation(records)
    for key in ("bbox/AP", "segm/AP", "bbox/AP-person", "segm/AP-person"):
        assert key in results and (math.isnan(results[key]) or 0 <= results[key] <= 100), key

    # predictions of exactly the validation subset, with the json's own category ids
    with open(output_dir / "inference" / "coco_instances_results.json") as f:
        predictions = json.load(f)
    assert {p["image_id"] for p in predictions} == set(val_ids)
    coco_ids = {c["id"] for c in json.loads(val_json.read_text())["categories"]}
    assert {p["category_id"] for p in predictions} <= coco_ids

    state = torch.load(output_dir / "model_final.pth", map_location="cpu", weights_only=True)
    assert state["model"]["sem_seg_head.predictor.class_embed.weight"].shape == (80, 256)
    assert (output_dir / "predictions" / "iter_0000003.png").is_file()
