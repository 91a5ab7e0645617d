"""Training targets from any mask container: a tensor, our BitMasks / PolygonMasks, or foreign
(detectron2-like) objects that only have ``.tensor`` or ``.polygons``; all give the same
targets and the same losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from maskdino_test_utils import load_config, two_image_batch

from detrex_ext.config import instantiate
from detrex_ext.structures import BitMasks, ImageList, PolygonMasks, masks_to_tensor


class ForeignBitMasks:
    """Another library's dense masks: only ``.tensor`` (detectron2's BitMasks has more)."""

    def __init__(self, tensor):
        self.tensor = tensor

    def to(self, device):
        return ForeignBitMasks(self.tensor.to(device))

    def __len__(self):
        return len(self.tensor)

    def __getitem__(self, item):
        return ForeignBitMasks(self.tensor[item])


class ForeignPolygonMasks:
    """Another library's polygons: ``.polygons[i]`` is a list of flat coordinate arrays."""

    def __init__(self, polygons):
        self.polygons = polygons

    def to(self, device):
        return self

    def __len__(self):
        return len(self.polygons)

    def __getitem__(self, item):
        return ForeignPolygonMasks([self.polygons[item]])


def _rectangle_polygons(masks: torch.Tensor) -> list[list[np.ndarray]]:
    """The filled rectangles of ``masks`` as polygons on pixel borders."""
    polygons = []
    for mask in masks:
        ys, xs = torch.nonzero(mask, as_tuple=True)
        x0, y0, x1, y1 = xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1
        polygons.append([np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float64)])
    return polygons


def test_masks_to_tensor_reads_every_container():
    masks = torch.zeros(2, 6, 8, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    masks[1, 4:6, 0:8] = True
    polygons = _rectangle_polygons(masks)
    for container in (
        masks,
        masks.numpy(),
        BitMasks(masks),
        PolygonMasks(polygons),
        ForeignBitMasks(masks.to(torch.uint8)),
        ForeignPolygonMasks(polygons),
    ):
        assert torch.equal(masks_to_tensor(container, 6, 8), masks), type(container)
    assert masks_to_tensor(PolygonMasks([]), 6, 8).shape == (0, 6, 8)
    with pytest.raises(TypeError, match=r"\.tensor"):
        masks_to_tensor([1, 2], 6, 8)


def test_model_targets_and_losses_are_the_same_for_every_container():
    model = instantiate(load_config("maskdino_r50_coco_instance_seg_50ep", reduced=True).model)
    batch = two_image_batch()
    images = ImageList.from_tensors([x["image"].float() for x in batch], model.size_divisibility)
    reference = model.prepare_targets(batch, images)
    losses = {}
    for name, wrap in [
        ("tensor", lambda m: m),
        ("foreign_bitmasks", ForeignBitMasks),
        ("foreign_polygons", lambda m: ForeignPolygonMasks(_rectangle_polygons(m))),
        ("polygon_masks", lambda m: PolygonMasks(_rectangle_polygons(m))),
    ]:
        wrapped = []
        for x in two_image_batch():
            x["instances"].gt_masks = wrap(x["instances"].gt_masks)
            wrapped.append(x)
        targets = model.prepare_targets(wrapped, images)
        for got, want in zip(targets, reference):
            assert torch.equal(got["masks"], want["masks"]), name
            assert torch.equal(got["boxes"], want["boxes"]), name
        torch.manual_seed(0)
        losses[name] = {k: v.item() for k, v in model(wrapped).items()}
    assert all(values == losses["tensor"] for values in losses.values())
