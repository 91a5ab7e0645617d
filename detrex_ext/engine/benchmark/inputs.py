"""Synthetic benchmark inputs: smooth images and training batches of rectangle instances."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from detrex_ext.structures import Boxes, Instances

__all__ = [
    "instance_counts",
    "synthetic_image",
    "synthetic_image_batch",
    "synthetic_training_batch",
]


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic HWC uint8 RGB image with smooth structure (upsampled noise)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, height // 32), max(2, width // 32), generator=generator)
    image = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")
    return (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def instance_counts(counts: int | Sequence[int], batch_size: int) -> list[int]:
    """Instances per image: one count for all images, or a list repeated cyclically over the batch
    (``(12, 7)`` at batch 4 gives 12, 7, 12, 7; at batch 1 gives 12)."""
    counts = [counts] if isinstance(counts, int) else list(counts)
    if not counts or any(c < 0 for c in counts):
        raise ValueError(f"instance counts must be a non-empty list of integers >= 0, got {counts}")
    return [counts[i % len(counts)] for i in range(batch_size)]


def synthetic_training_batch(
    batch_size: int,
    size: int | Sequence[tuple[int, int]],
    num_classes: int,
    instances_per_image: int | Sequence[int] = 6,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Model inputs with random rectangle instances and a matching sem_seg.

    ``size``: the side of square images, or one ``(height, width)`` per image (``batch_size``
    of them). Each dict: ``image`` uint8 [3, H, W], ``height``/``width``, ``instances`` with
    ``gt_boxes`` [N, 4] (XYXY pixels), ``gt_classes`` [N] int64, ``gt_masks`` [N, H, W] bool (the
    box's pixels), ``sem_seg`` [H, W] int64 (255 = unlabelled, later masks on top). N per image:
    see :func:`instance_counts`.
    """
    sizes = [(size, size)] * batch_size if isinstance(size, int) else [tuple(s) for s in size]
    if len(sizes) != batch_size or any(min(s) < 16 for s in sizes):
        raise ValueError(f"need {batch_size} image sizes of at least 16 pixels, got {size}")
    generator = torch.Generator().manual_seed(seed)
    batch = []
    for count, (height, width) in zip(instance_counts(instances_per_image, batch_size), sizes):
        image = torch.from_numpy(
            synthetic_image(height, width, int(torch.randint(0, 10**6, (1,), generator=generator)))
        ).permute(2, 0, 1)
        limits = torch.tensor([width, height])
        corners = (torch.rand(count, 2, generator=generator) * (limits - 8)).long()
        extents = 8 + (torch.rand(count, 2, generator=generator) * (limits // 2 - 8).clamp(min=1))
        boxes = torch.cat([corners, torch.minimum(corners + extents.long(), limits)], 1).float()
        masks = torch.zeros(count, height, width, dtype=torch.bool)
        for mask, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist()):
            mask[y0:y1, x0:x1] = True
        classes = torch.randint(0, num_classes, (count,), generator=generator)
        sem_seg = torch.full((height, width), 255, dtype=torch.long)
        for mask, label in zip(masks, classes):
            sem_seg[mask] = label
        instances = Instances(
            (height, width), gt_boxes=Boxes(boxes), gt_classes=classes, gt_masks=masks
        )
        batch.append(
            {
                "image": image,
                "height": height,
                "width": width,
                "instances": instances,
                "sem_seg": sem_seg,
            }
        )
    return batch


def synthetic_image_batch(sizes: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
    """Inference inputs: one :func:`synthetic_image` (seed = its index) per ``(H, W)``, as
    ``image`` uint8 ``[3, H, W]`` with ``height``/``width``."""
    batch = []
    for seed, (height, width) in enumerate(sizes):
        image = torch.from_numpy(synthetic_image(height, width, seed=seed))
        batch.append(
            {"image": image.permute(2, 0, 1).contiguous(), "height": height, "width": width}
        )
    return batch
