"""Instance masks: dense ``BitMasks`` and COCO-style ``PolygonMasks``, and ``masks_to_tensor``,
which reads any mask container (ours, detectron2's, or anything with ``.tensor`` /
``.polygons``) as a dense tensor."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch

from .boxes import Boxes


def polygon_area(x: np.ndarray, y: np.ndarray) -> float:
    """Area of a simple polygon from its vertex coordinates (shoelace formula)."""
    return 0.5 * float(np.abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def polygons_to_bitmask(polygons: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterise the polygons of one object (pycocotools' rule: pixel i covers [i, i+1)).

    Args:
        polygons: flat arrays ``[x0, y0, x1, y1, ...]`` (at least 3 points each).
        height, width: size of the output.

    Returns:
        bool ndarray ``[height, width]``, the union of all polygons.
    """
    if len(polygons) == 0:
        return np.zeros((height, width), dtype=bool)
    rles = mask_util.frPyObjects([np.asarray(p, dtype=np.float64) for p in polygons], height, width)
    return mask_util.decode([mask_util.merge(rles)])[:, :, 0].astype(bool)


def masks_to_tensor(masks: Any, height: int, width: int) -> torch.Tensor:
    """Instance masks as a bool tensor ``[N, height, width]``, duck-typed.

    Accepts anything with ``.tensor`` (``BitMasks``, detectron2's ``BitMasks``), anything with
    ``.polygons`` (``PolygonMasks``, detectron2's ``PolygonMasks``: rasterised at
    ``(height, width)``), a tensor or a numpy array (probabilities are not thresholded here:
    non-zero is True).
    """
    if hasattr(masks, "tensor"):
        masks = masks.tensor
    elif hasattr(masks, "polygons"):
        dense = [polygons_to_bitmask(p, height, width) for p in masks.polygons]
        if not dense:
            return torch.zeros(0, height, width, dtype=torch.bool)
        return torch.from_numpy(np.stack(dense))
    if isinstance(masks, np.ndarray):
        masks = torch.from_numpy(np.ascontiguousarray(masks))
    if not isinstance(masks, torch.Tensor) or masks.dim() != 3:
        raise TypeError(
            "expected instance masks: a [N, H, W] tensor/array or an object with .tensor "
            f"(BitMasks) or .polygons (PolygonMasks), got {type(masks).__name__}"
        )
    return masks.bool()


class BitMasks:
    """N dense masks of one image: ``tensor [N, H, W]`` bool."""

    def __init__(self, tensor: torch.Tensor | np.ndarray):
        if isinstance(tensor, np.ndarray):
            tensor = torch.from_numpy(np.ascontiguousarray(tensor))
        tensor = tensor.to(torch.bool)
        if tensor.dim() != 3:
            raise ValueError(
                f"BitMasks expects a [N, H, W] tensor, got shape {tuple(tensor.shape)}"
            )
        self.tensor = tensor
        self.image_size = tuple(tensor.shape[1:])

    def to(self, *args: Any, **kwargs: Any) -> BitMasks:
        return BitMasks(self.tensor.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def __getitem__(self, item: int | slice | torch.Tensor | list) -> BitMasks:
        """Index like a tensor; an int gives a ``BitMasks`` of length 1."""
        if isinstance(item, int):
            return BitMasks(self.tensor[item].unsqueeze(0))
        m = self.tensor[item]
        if m.dim() != 3:
            raise IndexError(f"indexing BitMasks with {item!r} did not return a [N, H, W] tensor")
        return BitMasks(m)

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield from self.tensor

    def __repr__(self) -> str:
        return f"BitMasks(num_instances={len(self.tensor)}, image_size={self.image_size})"

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def nonempty(self) -> torch.Tensor:
        """Bool ``[N]``: True where the mask has at least one pixel."""
        return self.tensor.flatten(1).any(dim=1)

    def area(self) -> torch.Tensor:
        """Pixel counts ``[N]``."""
        return self.tensor.flatten(1).sum(dim=1)

    @staticmethod
    def from_polygon_masks(
        polygon_masks: PolygonMasks | list[list[np.ndarray]], height: int, width: int
    ) -> BitMasks:
        """Rasterise polygons into a ``[N, height, width]`` BitMasks."""
        polygons = getattr(polygon_masks, "polygons", polygon_masks)
        masks = [polygons_to_bitmask(p, height, width) for p in polygons]
        if not masks:
            return BitMasks(torch.zeros(0, height, width, dtype=torch.bool))
        return BitMasks(torch.from_numpy(np.stack(masks)))

    def get_bounding_boxes(self) -> Boxes:
        """Tight boxes around the masks, exclusive max: ``(x_min, y_min, x_max + 1, y_max + 1)``.

        An empty mask gives the box (0, 0, 0, 0).
        """
        n = self.tensor.shape[0]
        boxes = torch.zeros(n, 4, dtype=torch.float32, device=self.tensor.device)
        if n == 0:
            return Boxes(boxes)
        cols = self.tensor.any(dim=1)  # [N, W]
        rows = self.tensor.any(dim=2)  # [N, H]
        nonempty = cols.any(dim=1)
        w, h = cols.shape[1], rows.shape[1]
        x_idx = torch.arange(w, device=cols.device)
        y_idx = torch.arange(h, device=rows.device)
        x0 = torch.where(cols, x_idx, w).amin(dim=1)
        x1 = torch.where(cols, x_idx, -1).amax(dim=1) + 1
        y0 = torch.where(rows, y_idx, h).amin(dim=1)
        y1 = torch.where(rows, y_idx, -1).amax(dim=1) + 1
        stacked = torch.stack([x0, y0, x1, y1], dim=1).to(torch.float32)
        boxes[nonempty] = stacked[nonempty]
        return Boxes(boxes)

    @staticmethod
    def cat(bitmasks_list: list[BitMasks]) -> BitMasks:
        if len(bitmasks_list) == 0 or not all(isinstance(b, BitMasks) for b in bitmasks_list):
            raise TypeError("BitMasks.cat expects a non-empty list of BitMasks")
        return BitMasks(torch.cat([b.tensor for b in bitmasks_list], dim=0))


class PolygonMasks:
    """N masks given as polygons: ``polygons[i]`` is the list of polygons (flat float64 arrays
    ``[x0, y0, x1, y1, ...]``) of instance i, in absolute pixel coordinates.
    """

    def __init__(self, polygons: Sequence[Sequence[np.ndarray | torch.Tensor | Sequence[float]]]):
        if not isinstance(polygons, (list, tuple)):
            raise TypeError(
                "PolygonMasks expects a list (instances) of lists (polygons) of flat coordinate "
                f"arrays, got {type(polygons)}"
            )
        self.polygons: list[list[np.ndarray]] = [
            [_as_polygon_array(p) for p in _check_instance(instance)] for instance in polygons
        ]

    def to(self, *args: Any, **kwargs: Any) -> PolygonMasks:
        return self

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def get_bounding_boxes(self) -> Boxes:
        """Tight boxes around the polygon vertices, ``[N, 4]`` xyxy (no +1)."""
        boxes = torch.zeros(len(self.polygons), 4, dtype=torch.float32)
        for idx, instance in enumerate(self.polygons):
            if not instance:
                continue
            coords = np.concatenate([p.reshape(-1, 2) for p in instance], axis=0)
            boxes[idx, :2] = torch.from_numpy(coords.min(axis=0)).float()
            boxes[idx, 2:] = torch.from_numpy(coords.max(axis=0)).float()
        return Boxes(boxes)

    def nonempty(self) -> torch.Tensor:
        """Bool ``[N]``: True where the instance has at least one polygon."""
        return torch.tensor([len(p) > 0 for p in self.polygons], dtype=torch.bool)

    def area(self) -> torch.Tensor:
        """Polygon areas ``[N]`` (sum over the instance's polygons, overlaps not removed)."""
        areas = [
            sum(polygon_area(p[0::2], p[1::2]) for p in instance) for instance in self.polygons
        ]
        return torch.tensor(areas, dtype=torch.float32)

    def __getitem__(self, item: int | slice | list | torch.Tensor) -> PolygonMasks:
        if isinstance(item, int):
            return PolygonMasks([self.polygons[item]])
        if isinstance(item, slice):
            return PolygonMasks(self.polygons[item])
        index = torch.as_tensor(item)
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        return PolygonMasks([self.polygons[int(i)] for i in index.tolist()])

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        return iter(self.polygons)

    def __repr__(self) -> str:
        return f"PolygonMasks(num_instances={len(self.polygons)})"

    def __len__(self) -> int:
        return len(self.polygons)

    @staticmethod
    def cat(polymasks_list: list[PolygonMasks]) -> PolygonMasks:
        if len(polymasks_list) == 0 or not all(isinstance(p, PolygonMasks) for p in polymasks_list):
            raise TypeError("PolygonMasks.cat expects a non-empty list of PolygonMasks")
        return PolygonMasks([p for masks in polymasks_list for p in masks.polygons])


def _check_instance(instance: Any) -> Sequence:
    if not isinstance(instance, (list, tuple)):
        raise TypeError(
            f"each instance of PolygonMasks must be a list of polygons, got {type(instance)}"
        )
    return instance


def _as_polygon_array(polygon: np.ndarray | torch.Tensor | Sequence[float]) -> np.ndarray:
    if isinstance(polygon, torch.Tensor):
        polygon = polygon.cpu().numpy()
    arr = np.asarray(polygon, dtype=np.float64).reshape(-1)
    if len(arr) % 2 != 0 or len(arr) < 6:
        raise ValueError(f"a polygon needs an even number (>= 6) of coordinates, got {len(arr)}")
    return arr
