"""Data structures with detectron2's API: Instances, Boxes, masks, ImageList."""

from .boxes import (
    Boxes,
    BoxMode,
    matched_pairwise_iou,
    pairwise_intersection,
    pairwise_ioa,
    pairwise_iou,
)
from .image_list import ImageList
from .instances import Instances
from .masks import BitMasks, PolygonMasks, masks_to_tensor, polygon_area, polygons_to_bitmask

__all__ = [
    "BitMasks",
    "BoxMode",
    "Boxes",
    "ImageList",
    "Instances",
    "PolygonMasks",
    "masks_to_tensor",
    "matched_pairwise_iou",
    "pairwise_intersection",
    "pairwise_ioa",
    "pairwise_iou",
    "polygon_area",
    "polygons_to_bitmask",
]
