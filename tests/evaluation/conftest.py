"""Fixtures of the data tests: an isolated dataset catalog."""

from __future__ import annotations

import pytest

from detrex_ext.data.catalog import catalog_snapshot


@pytest.fixture(autouse=True)
def isolated_catalog():
    """Every test starts and ends with the catalog it found (registrations do not leak)."""
    with catalog_snapshot():
        yield


class Oracle:
    """Model outputs made from ground truth (perfect predictions), from dataset dicts."""

    @staticmethod
    def instances(record: dict):
        import numpy as np
        import torch

        from detrex_ext.structures import Boxes, BoxMode, Instances, polygons_to_bitmask

        anns = [a for a in record["annotations"] if not a.get("iscrowd", 0)]
        h, w = record["height"], record["width"]
        inst = Instances((h, w))
        boxes = [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.ones(len(anns))
        inst.pred_classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        masks = [polygons_to_bitmask(a["segmentation"], h, w) for a in anns]
        inst.pred_masks = (
            torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, h, w, dtype=torch.bool)
        )
        return inst

    @staticmethod
    def panoptic(record: dict):
        import torch

        from detrex_ext.data import load_pan_seg

        segments = [
            {"id": s["id"], "category_id": s["category_id"], "isthing": s["isthing"]}
            for s in record["segments_info"]
        ]
        return torch.from_numpy(load_pan_seg(record)), segments

    @staticmethod
    def sem_seg(record: dict, num_classes: int, ignore_label: int = 255):
        import numpy as np
        import torch

        from detrex_ext.data import load_sem_seg

        label = torch.from_numpy(load_sem_seg(record).astype(np.int64))
        label[label == ignore_label] = 0
        return torch.nn.functional.one_hot(label, num_classes).permute(2, 0, 1).float()


@pytest.fixture
def oracle() -> Oracle:
    return Oracle()
