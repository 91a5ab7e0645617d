"""Catalog, metadata, registration rules and loading counts (synthetic and real data)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detrex_ext.data import (
    DatasetCatalog,
    MetadataCatalog,
    catalog_snapshot,
    get_detection_dataset_dicts,
    register_ade20k_semantic,
    register_builtin_datasets,
    register_coco_instances,
    register_coco_root,
    register_synthetic_shapes,
)
from detrex_ext.data.datasets import builtin_dataset_names, convert_to_coco_dict
from detrex_ext.structures import BoxMode


def test_builtin_names_register_lazily_under_the_env_root(monkeypatch, tmp_path):
    monkeypatch.setenv("DETREX_DATASETS", str(tmp_path))
    for name in ("coco_2017_val", "coco_2017_train_panoptic", "ade20k_sem_seg_val"):
        DatasetCatalog.data.pop(name, None)
        MetadataCatalog.data.pop(name, None)
    meta = MetadataCatalog.get("coco_2017_val")
    assert len(meta.thing_classes) == 80 and meta.thing_classes[0] == "person"
    assert meta.json_file == str(tmp_path / "coco" / "annotations" / "instances_val2017.json")
    assert meta.thing_dataset_id_to_contiguous_id[90] == 79
    panoptic = MetadataCatalog.get("coco_2017_val_panoptic_with_sem_seg")
    assert len(panoptic.stuff_classes) == 133 and panoptic.stuff_classes[80] == "banner"
    assert panoptic.stuff_dataset_id_to_contiguous_id[200] == 132
    assert panoptic.sem_seg_root.endswith("panoptic_semseg_val2017")
    ade = MetadataCatalog.get("ade20k_sem_seg_val")
    assert len(ade.stuff_classes) == 150 and ade.ignore_label == 255
    assert {"ade20k_sem_seg_train", "cityscapes_fine_sem_seg_val", "synthetic_shapes_train"} <= set(
        builtin_dataset_names()
    )
    with pytest.raises(FileNotFoundError):
        DatasetCatalog.get("coco_2017_val")  # registered, but the files are not there


def test_builtin_name_with_other_classes_is_refused(tmp_path):
    json_file = tmp_path / "mine.json"
    json_file.write_text(
        json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "widget"}]})
    )
    with pytest.raises(ValueError, match="Pick a new name") as info:
        register_coco_instances("coco_2017_train", {}, str(json_file), str(tmp_path))
    assert "built-in" in str(info.value)
    with pytest.raises(ValueError, match="Pick a new name"):
        register_synthetic_shapes("coco_2017_val")
    # the same classes under a built-in name are fine (e.g. another copy of COCO)
    register_coco_root(tmp_path / "elsewhere", prefix="coco_2017")
    assert MetadataCatalog.get("coco_2017_val").image_root == str(
        tmp_path / "elsewhere" / "val2017"
    )


def test_custom_registration_reads_classes_lazily_and_refuses_changes(tmp_path):
    categories = [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}]
    images = [{"id": 1, "file_name": "x.jpg", "height": 10, "width": 20}]
    annotations = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 7,
            "bbox": [1, 2, 3, 4],
            "iscrowd": 0,
            "segmentation": [[1, 2, 4, 2, 4, 6]],
            "area": 6,
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 3,
            "bbox": [0, 0, 2, 2],
            "iscrowd": 0,
            "segmentation": [[0, 0, 1]],
            "area": 1,
        },  # invalid polygon: dropped
    ]
    json_file = tmp_path / "data.json"
    json_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    (tmp_path / "x.jpg").write_bytes(b"")  # image files are checked to exist when loading
    register_coco_instances("my_data", {}, json_file, tmp_path)
    meta = MetadataCatalog.get("my_data")
    assert meta.thing_classes == ["a", "b"]  # sorted by id -> contiguous 0, 1
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1}
    (record,) = DatasetCatalog.get("my_data")
    assert record["file_name"] == str(tmp_path / "x.jpg") and (
        record["height"],
        record["width"],
    ) == (10, 20)
    (ann,) = record["annotations"]
    assert ann["category_id"] == 1 and ann["bbox_mode"] == BoxMode.XYWH_ABS
    register_coco_instances("my_data", {}, json_file, tmp_path)  # same classes: accepted
    with pytest.raises(ValueError, match="Pick a new name"):
        register_coco_instances("my_data", {"thing_classes": ["x", "y"]}, json_file, tmp_path)
    with pytest.raises(ValueError, match="cannot be set to a different value"):
        meta.thing_classes = ["c"]
    with pytest.raises(AttributeError, match="does not exist in the metadata of dataset 'my_data'"):
        _ = meta.stuff_classes
    with pytest.raises(KeyError, match="Did you mean 'my_data'"):
        DatasetCatalog.get("my_dat")


def test_synthetic_dataset_is_deterministic_and_consistent():
    register_synthetic_shapes("syn_a", num_images=12, image_size=(96, 128), seed=5)
    register_synthetic_shapes("syn_b", num_images=12, image_size=(96, 128), seed=5, max_objects=3)
    first, again = DatasetCatalog.get("syn_a"), DatasetCatalog.get("syn_a")
    assert len(first) == 12
    assert np.array_equal(first[3]["scene"].image(), again[3]["scene"].image())
    assert not np.array_equal(first[3]["scene"].image(), first[4]["scene"].image())
    assert all(1 <= len(r["annotations"]) <= 3 for r in DatasetCatalog.get("syn_b"))
    meta = MetadataCatalog.get("syn_a")
    assert meta.thing_classes == ["circle", "square", "triangle"]
    assert meta.stuff_classes == ["circle", "square", "triangle", "sky", "ground"]
    for record in first:
        scene = record["scene"]
        image, sem, pan = scene.image(), scene.sem_seg(), scene.pan_seg()
        assert image.shape == (96, 128, 3) and sem.shape == pan.shape == (96, 128)
        assert 1 <= len(record["annotations"]) <= 6
        segments = {s["id"]: s for s in record["segments_info"]}
        assert set(np.unique(pan)) == set(segments)  # no void, every segment listed
        for segment_id, segment in segments.items():
            mask = pan == segment_id
            assert mask.sum() == segment["area"]
            assert np.all(sem[mask] == segment["category_id"])  # panoptic and semantic agree
        for ann, mask in zip(record["annotations"], scene.object_masks()):
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            color = np.asarray(image[mask], dtype=float).mean(axis=0)
            assert (
                np.argmax(color) == [0, 1, 2][ann["category_id"]]
            )  # red circles, green squares, blue triangles


def test_synthetic_dicts_convert_to_coco_format():
    register_synthetic_shapes("syn_c", num_images=3, seed=1)
    records = DatasetCatalog.get("syn_c")
    coco = convert_to_coco_dict(records, MetadataCatalog.get("syn_c"))
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
    assert len(coco["annotations"]) == sum(len(r["annotations"]) for r in records)
    first = coco["annotations"][0]
    assert first["id"] == 1 and first["area"] == records[0]["annotations"][0]["area"]
    x0, y0, x1, y1 = records[0]["annotations"][0]["bbox"]
    assert first["bbox"] == [x0, y0, x1 - x0, y1 - y0]
    # detectron2's signature: a registered dataset name
    assert convert_to_coco_dict("syn_c") == coco
    with pytest.raises(TypeError, match="needs the metadata"):
        convert_to_coco_dict(records)


def test_coco_mini_counts(coco_mini_root):
    register_coco_root(coco_mini_root, prefix="mini")
    train, val = DatasetCatalog.get("mini_train"), DatasetCatalog.get("mini_val")
    assert len(train) == len(val) == 100
    assert sum(len(r["annotations"]) for r in train) == 746
    assert sum(len(r["annotations"]) for r in val) == 712
    assert sum(a["iscrowd"] for r in val for a in r["annotations"]) == 5
    assert sum(not r["annotations"] for r in train) == 2
    assert len(get_detection_dataset_dicts("mini_train")) == 98  # images without things dropped
    assert len(get_detection_dataset_dicts(["mini_train", "mini_val"])) == 198
    panoptic = DatasetCatalog.get("mini_val_panoptic_with_sem_seg")
    assert len(panoptic) == 100
    assert sum(len(r["segments_info"]) for r in panoptic) == 1078
    assert sum(s["isthing"] for r in panoptic for s in r["segments_info"]) == 712
    assert all(0 <= s["category_id"] < 133 for r in panoptic for s in r["segments_info"])
    assert panoptic[0]["sem_seg_file_name"].endswith(".png")
    assert "sem_seg_file_name" not in DatasetCatalog.get("mini_train_panoptic")[0]


def test_ade20k_sample_counts(ade20k_sample_root):
    base = ade20k_sample_root / "ADEChallengeData2016"
    register_ade20k_semantic(
        "ade_sample", base / "images" / "validation", base / "annotations_detectron2" / "validation"
    )
    records = DatasetCatalog.get("ade_sample")
    assert [r["image_id"] for r in records] == [
        "ADE_val_00000001",
        "ADE_val_00000002",
        "ADE_val_00000003",
    ]
    assert len(MetadataCatalog.get("ade_sample").stuff_classes) == 150


def test_catalog_snapshot_undoes_registrations():
    with catalog_snapshot():
        register_synthetic_shapes("temporary_syn", num_images=1)
        assert (
            "temporary_syn" in DatasetCatalog.list() and "temporary_syn" in MetadataCatalog.list()
        )
    assert (
        "temporary_syn" not in DatasetCatalog.list()
        and "temporary_syn" not in MetadataCatalog.list()
    )
    assert "DatasetCatalog(registered datasets:" in str(DatasetCatalog)


def test_register_builtin_datasets_returns_all_names(tmp_path):
    names = register_builtin_datasets(tmp_path)
    assert "coco_2017_train" in names and "ade20k_sem_seg_train" in names
    assert MetadataCatalog.get("ade20k_sem_seg_train").image_root.startswith(str(tmp_path))
