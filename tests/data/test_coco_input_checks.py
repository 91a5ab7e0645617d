"""COCO-format data written by the tests, through the real registration, dataset loading, train
loader (LSJ instance mapper) and COCOEvaluator: every defect is refused (or warned about) when
the dataset is loaded, naming the file, the count and the fix; nothing gives silently wrong
classes or empty targets."""

from __future__ import annotations

import itertools
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detrex_ext.data import (
    COCOInstanceLSJDatasetMapper,
    DatasetCatalog,
    MetadataCatalog,
    build_detection_train_loader,
    get_detection_dataset_dicts,
    register_coco_instances,
)
from detrex_ext.data.datasets.coco_checks import COCOFormatError
from detrex_ext.evaluation import COCOEvaluator
from detrex_ext.structures import Boxes, Instances
from detrex_ext.utils.image_io import UnreadableImageError

SIZE = 32


def _square(image_id: int, category_id: int, ann_id: int, masks: bool = True) -> dict:
    x0, y0, side = 4 + image_id, 6, 12
    ann = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [x0, y0, side, side],
        "area": side * side,
        "iscrowd": 0,
    }
    if masks:
        ann["segmentation"] = [[x0, y0, x0 + side, y0, x0 + side, y0 + side, x0, y0 + side]]
    return ann


def _write(
    root: Path,
    *,
    categories: list[dict] | None = None,
    num_images: int = 4,
    masks: bool = True,
    extra_annotations: tuple[dict, ...] = (),
) -> Path:
    """``root/images/*.png`` and ``root/data.json``: ``num_images`` images, two squares each."""
    categories = categories or [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    ids = itertools.count(1)
    for image_id in range(1, num_images + 1):
        name = f"{image_id:03d}.png"
        pixels = np.full((SIZE, SIZE, 3), 40 * image_id % 255, np.uint8)
        Image.fromarray(pixels).save(images_dir / name)
        images.append({"id": image_id, "file_name": name, "height": SIZE, "width": SIZE})
        for category in categories[:2]:
            annotations.append(_square(image_id, category["id"], next(ids), masks))
    annotations.extend(extra_annotations)
    data = {"images": images, "annotations": annotations, "categories": categories}
    json_file = root / "data.json"
    json_file.write_text(json.dumps(data))
    return json_file


def _register(name: str, json_file: Path, **kwargs) -> str:
    return register_coco_instances(name, {}, json_file, json_file.parent / "images", **kwargs)


def _train_loader(name: str, **kwargs):
    return build_detection_train_loader(
        get_detection_dataset_dicts(name),
        mapper=COCOInstanceLSJDatasetMapper(is_train=True, image_size=SIZE, min_scale=1.0),
        total_batch_size=2,
        aspect_ratio_grouping=False,
        seed=0,
        **kwargs,
    )


def test_a_valid_dataset_trains_with_masks(tmp_path) -> None:
    name = _register("ok_train", _write(tmp_path))
    batch = next(iter(_train_loader(name)))
    assert [len(d["instances"]) for d in batch] == [2, 2]
    assert all(d["instances"].gt_masks.sum() > 0 for d in batch)


def test_duplicate_category_ids_are_refused_naming_ids_and_names(tmp_path) -> None:
    categories = [
        {"id": 1, "name": "car"},
        {"id": 2, "name": "bus"},
        {"id": 2, "name": "truck"},
        {"id": 3, "name": "bike"},
    ]
    json_file = _write(tmp_path, categories=categories)
    name = _register("dup_train", json_file)
    expected = f"{json_file} has categories that share an id (id 2: 'bus', 'truck')"
    with pytest.raises(COCOFormatError, match=re.escape(expected)):
        assert MetadataCatalog.get(name).thing_classes  # read lazily from the json
    with pytest.raises(COCOFormatError, match="share an id"):
        DatasetCatalog.get(name)


def test_box_only_annotations_are_refused_at_load_time(tmp_path) -> None:
    json_file = _write(tmp_path, masks=False)
    name = _register("boxes_train", json_file)
    with pytest.raises(COCOFormatError) as error:
        get_detection_dataset_dicts(name)
    message = str(error.value)
    assert message.startswith(
        f"8 of the 8 annotations in {json_file} have no 'segmentation' (e.g. annotation id 1 of "
        "image 1)"
    )
    assert "polygon or RLE mask" in message and "require_masks=False" in message


def test_box_only_data_allowed_explicitly_evaluates_boxes_only(tmp_path, caplog) -> None:
    json_file = _write(tmp_path, masks=False)
    name = _register("boxes_val", json_file, require_masks=False)
    records = DatasetCatalog.get(name)
    evaluator = COCOEvaluator(name, distributed=False)
    evaluator.reset()
    for record in records:
        (ann,) = [a for a in record["annotations"] if a["category_id"] == 0]
        x, y, w, h = ann["bbox"]
        instances = Instances((SIZE, SIZE))
        instances.pred_boxes = Boxes(torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32))
        instances.scores = torch.tensor([0.9])
        instances.pred_classes = torch.tensor([0])
        instances.pred_masks = torch.zeros(1, SIZE, SIZE, dtype=torch.bool)
        evaluator.process([{"image_id": record["image_id"]}], [{"instances": instances}])
    with caplog.at_level(logging.WARNING, logger="detrex_ext"):
        results = evaluator.evaluate()
    assert set(results) == {"bbox"}  # no KeyError: mask AP is skipped, with a warning
    assert "have no segmentation, so mask AP cannot be computed" in caplog.text
    assert results["bbox"]["AP-circle"] == pytest.approx(100.0)


def test_annotations_of_unknown_images_are_counted_and_ignored(tmp_path, caplog) -> None:
    orphans = (_square(99, 1, 100), _square(98, 2, 101), _square(99, 2, 102))
    json_file = _write(tmp_path, extra_annotations=orphans)
    name = _register("orphans_train", json_file)
    with caplog.at_level(logging.WARNING, logger="detrex_ext"):
        records = DatasetCatalog.get(name)
    assert (
        f"3 annotations in {json_file} belong to image ids that are not among its images "
        "(e.g. 98, 99); they are ignored" in caplog.text
    )
    assert sum(len(r["annotations"]) for r in records) == 8


def test_missing_image_files_are_found_when_the_dataset_loads(tmp_path) -> None:
    json_file = _write(tmp_path)
    (tmp_path / "images" / "002.png").unlink()
    (tmp_path / "images" / "004.png").unlink()
    name = _register("missing_train", json_file)
    with pytest.raises(FileNotFoundError) as error:
        _train_loader(name)  # the loader loads the dataset when it is built
    assert str(error.value).startswith(
        f"2 of the 4 images listed in {json_file} are missing under {tmp_path / 'images'} "
        "(e.g. 002.png, 004.png)"
    )


def test_invalid_json_names_the_file(tmp_path) -> None:
    json_file = tmp_path / "data.json"
    json_file.write_text('{"images": [{"id": 1,}]}')
    name = _register("broken_train", json_file)
    with pytest.raises(COCOFormatError, match=f"{json_file} is not valid JSON \\(line 1, column"):
        assert MetadataCatalog.get(name).thing_classes
    json_file.write_text('{"images": []}')
    with pytest.raises(COCOFormatError, match="is not a COCO instances json: it needs the keys"):
        DatasetCatalog.get(name)


def test_truncated_image_is_named_and_can_be_skipped_behind_a_key(tmp_path, caplog) -> None:
    json_file = _write(tmp_path, num_images=3)
    damaged = tmp_path / "images" / "002.png"
    damaged.write_bytes(damaged.read_bytes()[:60])
    name = _register("damaged_train", json_file)
    stream = iter(_train_loader(name))
    with pytest.raises(UnreadableImageError) as error:
        for _ in range(3):
            next(stream)
    message = str(error.value)
    assert message.startswith(f"{damaged} is a truncated or damaged image (")
    assert "dataloader.train.skip_unreadable_images=True" in message

    with caplog.at_level(logging.WARNING, logger="detrex_ext"):
        batches = list(itertools.islice(iter(_train_loader(name, skip_unreadable_images=True)), 3))
    ids = [d["image_id"] for batch in batches for d in batch]
    assert len(ids) == 6 and 2 not in ids
    skipped = [
        r.getMessage() for r in caplog.records if "unreadable images skipped" in r.getMessage()
    ]
    assert skipped and f"{damaged} is a truncated or damaged image" in skipped[0]
    assert "(1 unreadable images skipped so far)" in skipped[0]
