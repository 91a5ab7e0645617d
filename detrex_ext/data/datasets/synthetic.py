"""A built-in synthetic dataset: coloured circles, squares and triangles over sky and ground.

Everything is generated deterministically from ``(seed, image index)``; no files are read or
written. Each record carries a ``ShapeScene`` that renders the image, the semantic map and the
panoptic map on demand, plus COCO-style polygon annotations and panoptic ``segments_info``, so
instance, panoptic and semantic mappers and evaluators all work on it.

Classes (contiguous ids): things ``circle`` 0, ``square`` 1, ``triangle`` 2; stuff ``sky`` 3,
``ground`` 4. ``thing_classes`` has the 3 things, ``stuff_classes`` all 5 (Mask DINO's panoptic
layout). Objects never overlap, so polygons are exact instance masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from detrex_ext.structures import BoxMode, polygons_to_bitmask

from ..catalog import register_dataset
from .builtin_meta import panoptic_metadata

__all__ = [
    "SYNTHETIC_CATEGORIES",
    "ShapeScene",
    "generate_scene",
    "load_synthetic_shapes",
    "register_synthetic_shapes",
]

# (dataset id, name, isthing, render colour RGB)
SYNTHETIC_CATEGORIES = [
    {"id": 1, "name": "circle", "isthing": 1, "color": (220, 50, 50)},
    {"id": 2, "name": "square", "isthing": 1, "color": (40, 170, 60)},
    {"id": 3, "name": "triangle", "isthing": 1, "color": (50, 90, 220)},
    {"id": 4, "name": "sky", "isthing": 0, "color": (170, 205, 235)},
    {"id": 5, "name": "ground", "isthing": 0, "color": (140, 110, 70)},
]
_NUM_THINGS = 3
_SKY, _GROUND = 3, 4  # contiguous ids
_EXTENT = {0: 0.5, 1: math.sqrt(0.5), 2: 1 / math.sqrt(3)}  # enclosing radius / size


@dataclass
class ShapeScene:
    """One generated image: two stuff regions split by a slanted horizon, and objects.

    Attributes:
        height, width: image size in pixels.
        horizon: ``(y_left, y_right)``; sky lies above the line joining them.
        objects: ``(class_id, flat polygon [x0, y0, ...], RGB colour)`` per object.
        noise_seed: seed of the pixel noise (amplitude ``noise``, in grey levels).
    """

    height: int
    width: int
    horizon: tuple[float, float]
    objects: list[tuple[int, np.ndarray, tuple[int, int, int]]]
    noise_seed: int
    noise: float = 8.0

    def _sky_mask(self) -> np.ndarray:
        w = float(self.width)
        polygon = np.array([0.0, 0.0, w, 0.0, w, self.horizon[1], 0.0, self.horizon[0]])
        return polygons_to_bitmask([polygon], self.height, self.width)

    def object_masks(self) -> list[np.ndarray]:
        """One bool ``[H, W]`` mask per object (they do not overlap)."""
        return [polygons_to_bitmask([poly], self.height, self.width) for _, poly, _ in self.objects]

    def _label_layers(self) -> tuple[np.ndarray, list[np.ndarray]]:
        sky = self._sky_mask()
        return sky, self.object_masks()

    def image(self) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB."""
        sky, masks = self._label_layers()
        rows = np.linspace(0.0, 1.0, self.height, dtype=np.float32)[:, None, None]
        sky_rgb = np.array(SYNTHETIC_CATEGORIES[_SKY]["color"], np.float32) * (0.85 + 0.15 * rows)
        ground_rgb = np.array(SYNTHETIC_CATEGORIES[_GROUND]["color"], np.float32) * (
            1.1 - 0.2 * rows
        )
        canvas = np.where(sky[:, :, None], sky_rgb, ground_rgb)
        canvas = np.broadcast_to(canvas, (self.height, self.width, 3)).copy()
        for (_, _, color), mask in zip(self.objects, masks):
            canvas[mask] = color
        noise = np.random.default_rng(self.noise_seed).random(canvas.shape, dtype=np.float32)
        canvas += (2 * noise - 1) * self.noise
        return np.clip(canvas, 0, 255).astype(np.uint8)

    def sem_seg(self) -> np.ndarray:
        """``[H, W]`` uint8 contiguous class ids (0..4; no ignored pixels)."""
        sky, masks = self._label_layers()
        label = np.where(sky, _SKY, _GROUND).astype(np.uint8)
        for (class_id, _, _), mask in zip(self.objects, masks):
            label[mask] = class_id
        return label

    def pan_seg(self) -> np.ndarray:
        """``[H, W]`` int64 segment ids: sky 1, ground 2, objects 3, 4, ... (no void)."""
        sky, masks = self._label_layers()
        ids = np.where(sky, 1, 2).astype(np.int64)
        for k, mask in enumerate(masks):
            ids[mask] = 3 + k
        return ids


def _shape_polygon(
    class_id: int, cx: float, cy: float, size: float, rng: np.random.Generator
) -> np.ndarray:
    if class_id == 0:  # circle as a 32-gon
        angles = rng.uniform(0, 2 * np.pi) + np.linspace(0, 2 * np.pi, 32, endpoint=False)
        radius = size / 2
    elif class_id == 1:  # square, tilted by up to 22.5 degrees
        angles = rng.uniform(-np.pi / 8, np.pi / 8) + np.array([0.25, 0.75, 1.25, 1.75]) * np.pi
        radius = size * _EXTENT[1]
    else:  # equilateral triangle, any rotation
        angles = rng.uniform(0, 2 * np.pi) + np.array([0.0, 2.0, 4.0]) * np.pi / 3
        radius = size * _EXTENT[2]
    xs, ys = cx + radius * np.cos(angles), cy + radius * np.sin(angles)
    return np.stack([xs, ys], axis=1).reshape(-1)


def generate_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    min_objects: int = 1,
    max_objects: int = 6,
    min_size: float = 0.15,
    max_size: float = 0.4,
) -> ShapeScene:
    """Draw one scene: a horizon, then objects placed without overlap (rejection sampling).

    Object sizes are fractions of ``min(height, width)``; at least one object is always placed.
    """
    short = min(height, width)
    horizon = (float(rng.uniform(0.3, 0.7) * height), float(rng.uniform(0.3, 0.7) * height))
    target = int(rng.integers(min_objects, max_objects + 1))
    placed: list[tuple[float, float, float]] = []  # (cx, cy, enclosing radius)
    objects = []
    for _ in range(target * 30):
        if len(objects) == target:
            break
        class_id = int(rng.integers(_NUM_THINGS))
        size = float(rng.uniform(min_size, max_size) * short)
        radius = min(size * _EXTENT[class_id], short / 2 - 1)
        size = radius / _EXTENT[class_id]
        cx = float(rng.uniform(radius, width - radius))
        cy = float(rng.uniform(radius, height - radius))
        if any(math.hypot(cx - x, cy - y) < radius + r + 2 for x, y, r in placed):
            continue
        placed.append((cx, cy, radius))
        base = np.array(SYNTHETIC_CATEGORIES[class_id]["color"])
        color = tuple(int(c) for c in np.clip(base + rng.integers(-25, 26, 3), 0, 255))
        objects.append((class_id, _shape_polygon(class_id, cx, cy, size, rng), color))
    return ShapeScene(height, width, horizon, objects, noise_seed=int(rng.integers(2**31)))


def _mask_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _scene_record(scene: ShapeScene, image_id: int, name: str) -> dict:
    masks = scene.object_masks()
    annotations, segments = [], []
    sky = scene._sky_mask()
    covered = np.zeros((scene.height, scene.width), dtype=bool)
    for mask in masks:
        covered |= mask
    for segment_id, (class_id, stuff) in enumerate(((_SKY, sky), (_GROUND, ~sky)), start=1):
        area = int((stuff & ~covered).sum())
        if area > 0:
            segments.append(
                {
                    "id": segment_id,
                    "category_id": class_id,
                    "iscrowd": 0,
                    "isthing": False,
                    "area": area,
                }
            )
    for k, ((class_id, polygon, _), mask) in enumerate(zip(scene.objects, masks)):
        area = int(mask.sum())
        if area == 0:
            continue
        annotations.append(
            {
                "bbox": _mask_box(mask),
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": class_id,
                "segmentation": [polygon.tolist()],
                "iscrowd": 0,
                "area": area,
            }
        )
        segments.append(
            {"id": 3 + k, "category_id": class_id, "iscrowd": 0, "isthing": True, "area": area}
        )
    return {
        "file_name": f"synthetic://{name}/{image_id:06d}",
        "image_id": image_id,
        "height": scene.height,
        "width": scene.width,
        "scene": scene,
        "annotations": annotations,
        "segments_info": segments,
    }


def load_synthetic_shapes(
    name: str,
    num_images: int,
    image_size: int | Sequence[int] = 128,
    min_objects: int = 1,
    max_objects: int = 6,
    seed: int = 0,
    min_size: float = 0.15,
    max_size: float = 0.4,
) -> list[dict]:
    """Generate the dataset dicts; image ``i`` depends only on ``(seed, i)`` and the sizes."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    records = []
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        scene = generate_scene(rng, height, width, min_objects, max_objects, min_size, max_size)
        records.append(_scene_record(scene, i, name))
    return records


def register_synthetic_shapes(
    name: str,
    num_images: int = 256,
    image_size: int | Sequence[int] = 128,
    min_objects: int = 1,
    max_objects: int = 6,
    seed: int = 0,
    min_size: float = 0.15,
    max_size: float = 0.4,
) -> None:
    """Register a synthetic shapes dataset under ``name`` (nothing is generated until used).

    Args:
        num_images: number of images.
        image_size: side, or ``(height, width)``, in pixels.
        min_objects, max_objects: objects per image (fewer if they do not fit).
        seed: base seed; use different seeds for train and validation splits.
        min_size, max_size: object size as a fraction of the short image side.
    """
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    if num_images <= 0:
        raise ValueError(f"num_images must be positive, got {num_images}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    metadata = {
        **panoptic_metadata(SYNTHETIC_CATEGORIES),
        "evaluator_type": "coco_panoptic_seg",
        "image_size": size,
        "num_images": num_images,
    }
    register_dataset(
        name,
        lambda: load_synthetic_shapes(
            name, num_images, size, min_objects, max_objects, seed, min_size, max_size
        ),
        metadata,
    )
