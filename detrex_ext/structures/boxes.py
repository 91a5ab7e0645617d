"""Axis-aligned boxes: ``BoxMode`` conversions, the ``Boxes`` container and pairwise overlaps."""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Iterator, Sequence, Union

import numpy as np
import torch

RawBoxType = Union[list, tuple, np.ndarray, torch.Tensor]


class BoxMode(IntEnum):
    """How the 4 numbers of a box are laid out (detectron2's values, so dataset dicts port)."""

    XYXY_ABS = 0  # (x0, y0, x1, y1) in pixels
    XYWH_ABS = 1  # (x0, y0, w, h) in pixels; COCO's layout
    XYXY_REL = 2  # (x0, y0, x1, y1) as fractions of the image size (not convertible)
    XYWH_REL = 3  # (x0, y0, w, h) as fractions of the image size (not convertible)
    XYWHA_ABS = 4  # (xc, yc, w, h, angle in degrees) rotated boxes

    @staticmethod
    def convert(box: RawBoxType, from_mode: BoxMode, to_mode: BoxMode) -> RawBoxType:
        """Convert one box (a sequence of 4 or 5 numbers) or an ``[N, 4|5]`` array.

        Returns the same type as ``box`` (list/tuple -> same kind, ndarray -> ndarray, tensor ->
        tensor). Only absolute modes convert; relative modes need the image size.
        """
        from_mode, to_mode = BoxMode(from_mode), BoxMode(to_mode)
        if from_mode == to_mode:
            return box
        relative = (BoxMode.XYXY_REL, BoxMode.XYWH_REL)
        if from_mode in relative or to_mode in relative:
            raise ValueError(
                f"cannot convert {from_mode.name} -> {to_mode.name}: relative modes need the image "
                "size; scale the boxes to pixels first"
            )
        original_type = type(box)
        single = isinstance(box, (list, tuple))
        if single:
            if len(box) not in (4, 5):
                raise ValueError(f"a single box must have 4 or 5 numbers, got {len(box)}")
            arr = torch.tensor(box, dtype=torch.float64)[None, :]
        elif isinstance(box, np.ndarray):
            arr = torch.from_numpy(np.asarray(box, dtype=np.float64)).clone()
        else:
            arr = box.clone()
        out = _convert_tensor(arr, from_mode, to_mode)
        if single:
            return original_type(out.flatten().tolist())
        if isinstance(box, np.ndarray):
            return out.numpy().astype(box.dtype, copy=False)
        return out


def _convert_tensor(arr: torch.Tensor, from_mode: BoxMode, to_mode: BoxMode) -> torch.Tensor:
    if from_mode == BoxMode.XYWHA_ABS and to_mode == BoxMode.XYXY_ABS:
        # enclosing axis-aligned box of a rotated box
        w, h, angle = arr[:, 2], arr[:, 3], arr[:, 4] * np.pi / 180.0
        cos, sin = angle.cos().abs(), angle.sin().abs()
        new_w, new_h = cos * w + sin * h, cos * h + sin * w
        x0, y0 = arr[:, 0] - new_w / 2.0, arr[:, 1] - new_h / 2.0
        return torch.stack([x0, y0, x0 + new_w, y0 + new_h], dim=1)
    if from_mode == BoxMode.XYWH_ABS and to_mode == BoxMode.XYWHA_ABS:
        xc, yc = arr[:, 0] + arr[:, 2] / 2.0, arr[:, 1] + arr[:, 3] / 2.0
        return torch.stack([xc, yc, arr[:, 2], arr[:, 3], torch.zeros_like(xc)], dim=1)
    if from_mode == BoxMode.XYWH_ABS and to_mode == BoxMode.XYXY_ABS:
        out = arr.clone()
        out[:, 2:4] = arr[:, 0:2] + arr[:, 2:4]
        return out
    if from_mode == BoxMode.XYXY_ABS and to_mode == BoxMode.XYWH_ABS:
        out = arr.clone()
        out[:, 2:4] = arr[:, 2:4] - arr[:, 0:2]
        return out
    if from_mode == BoxMode.XYXY_ABS and to_mode == BoxMode.XYWHA_ABS:
        return _convert_tensor(
            _convert_tensor(arr, from_mode, BoxMode.XYWH_ABS), BoxMode.XYWH_ABS, to_mode
        )
    if from_mode == BoxMode.XYWHA_ABS and to_mode == BoxMode.XYWH_ABS:
        return _convert_tensor(
            _convert_tensor(arr, from_mode, BoxMode.XYXY_ABS), BoxMode.XYXY_ABS, to_mode
        )
    raise NotImplementedError(f"conversion {from_mode.name} -> {to_mode.name} is not supported")


class Boxes:
    """A list of N axis-aligned boxes in one image, stored as ``tensor [N, 4]`` (x0, y0, x1, y1) in
    absolute pixels. Behaves like a tensor for indexing, ``len`` and ``.to(device)``.
    """

    def __init__(self, tensor: torch.Tensor | np.ndarray | Sequence):
        if not isinstance(tensor, torch.Tensor):
            tensor = torch.as_tensor(np.asarray(tensor), dtype=torch.float32)
        else:
            tensor = tensor.to(torch.float32) if not tensor.is_floating_point() else tensor
        if tensor.numel() == 0:
            # reshape so that an empty list of boxes still has shape [0, 4]
            tensor = tensor.reshape(-1, 4).to(dtype=torch.float32)
        if tensor.dim() != 2 or tensor.size(-1) != 4:
            raise ValueError(f"Boxes expects a [N, 4] tensor, got shape {tuple(tensor.shape)}")
        self.tensor = tensor

    def clone(self) -> Boxes:
        return Boxes(self.tensor.clone())

    def to(self, *args: Any, **kwargs: Any) -> Boxes:
        return Boxes(self.tensor.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def area(self) -> torch.Tensor:
        """Areas ``[N]`` (width x height; negative sizes give negative areas, as detectron2)."""
        box = self.tensor
        return (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])

    def clip(self, box_size: tuple[int, int]) -> None:
        """Clip in place to the image ``box_size = (height, width)``: x in [0, w], y in [0, h]."""
        if not torch.isfinite(self.tensor).all():
            raise ValueError("Box tensor contains infinite or NaN values")
        h, w = box_size
        x1 = self.tensor[:, 0].clamp(min=0, max=w)
        y1 = self.tensor[:, 1].clamp(min=0, max=h)
        x2 = self.tensor[:, 2].clamp(min=0, max=w)
        y2 = self.tensor[:, 3].clamp(min=0, max=h)
        self.tensor = torch.stack((x1, y1, x2, y2), dim=-1)

    def nonempty(self, threshold: float = 0.0) -> torch.Tensor:
        """Bool ``[N]``: True where both width and height exceed ``threshold``."""
        box = self.tensor
        widths = box[:, 2] - box[:, 0]
        heights = box[:, 3] - box[:, 1]
        return (widths > threshold) & (heights > threshold)

    def inside_box(self, box_size: tuple[int, int], boundary_threshold: int = 0) -> torch.Tensor:
        """Bool ``[N]``: True where the box lies inside ``(height, width)`` up to a margin."""
        height, width = box_size
        t = self.tensor
        return (
            (t[..., 0] >= -boundary_threshold)
            & (t[..., 1] >= -boundary_threshold)
            & (t[..., 2] < width + boundary_threshold)
            & (t[..., 3] < height + boundary_threshold)
        )

    def get_centers(self) -> torch.Tensor:
        """Centres ``[N, 2]`` as (x, y)."""
        return (self.tensor[:, :2] + self.tensor[:, 2:]) / 2

    def scale(self, scale_x: float, scale_y: float) -> None:
        """Scale in place (x by ``scale_x``, y by ``scale_y``)."""
        self.tensor[:, 0::2] *= scale_x
        self.tensor[:, 1::2] *= scale_y

    def __getitem__(self, item: int | slice | torch.Tensor | list) -> Boxes:
        """Index like a tensor; an int gives a ``Boxes`` of length 1."""
        if isinstance(item, int):
            return Boxes(self.tensor[item].view(1, -1))
        b = self.tensor[item]
        if b.dim() != 2:
            raise IndexError(f"indexing Boxes with {item!r} did not return a [N, 4] tensor")
        return Boxes(b)

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __repr__(self) -> str:
        return f"Boxes({self.tensor})"

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield from self.tensor

    @classmethod
    def cat(cls, boxes_list: list[Boxes]) -> Boxes:
        """Concatenate a list of ``Boxes`` (an empty list gives 0 boxes)."""
        if not isinstance(boxes_list, (list, tuple)):
            raise TypeError("Boxes.cat expects a list of Boxes")
        if len(boxes_list) == 0:
            return cls(torch.empty(0, 4))
        if not all(isinstance(box, Boxes) for box in boxes_list):
            raise TypeError("Boxes.cat expects every element to be a Boxes")
        return cls(torch.cat([b.tensor for b in boxes_list], dim=0))


def pairwise_intersection(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """Intersection areas ``[N, M]`` of every pair (xyxy)."""
    b1, b2 = boxes1.tensor, boxes2.tensor
    width_height = torch.min(b1[:, None, 2:], b2[:, 2:]) - torch.max(b1[:, None, :2], b2[:, :2])
    width_height.clamp_(min=0)
    return width_height.prod(dim=2)


def pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """IoU ``[N, M]`` of every pair; 0 where the union is empty."""
    area1, area2 = boxes1.area(), boxes2.area()
    inter = pairwise_intersection(boxes1, boxes2)
    union = area1[:, None] + area2 - inter
    return torch.where(
        inter > 0, inter / union, torch.zeros(1, dtype=inter.dtype, device=inter.device)
    )


def pairwise_ioa(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """Intersection over the area of ``boxes2``: ``[N, M]``."""
    area2 = boxes2.area()
    inter = pairwise_intersection(boxes1, boxes2)
    return torch.where(
        inter > 0, inter / area2, torch.zeros(1, dtype=inter.dtype, device=inter.device)
    )


def matched_pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """IoU ``[N]`` between ``boxes1[i]`` and ``boxes2[i]`` (same length)."""
    if len(boxes1) != len(boxes2):
        raise ValueError(
            f"boxlists should have the same number of entries, got {len(boxes1)}, {len(boxes2)}"
        )
    b1, b2 = boxes1.tensor, boxes2.tensor
    width_height = (torch.min(b1[:, 2:], b2[:, 2:]) - torch.max(b1[:, :2], b2[:, :2])).clamp(min=0)
    inter = width_height.prod(dim=1)
    return inter / (boxes1.area() + boxes2.area() - inter)
