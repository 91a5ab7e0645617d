"""Helpers for the Mask DINO tests: reduced configs and synthetic batches (CPU-sized)."""

from __future__ import annotations

import torch

from detrex_ext.config import LazyConfig, get_config
from detrex_ext.structures import Boxes, Instances

MODEL_CONFIGS = [
    "maskdino_r50_coco_instance_seg_50ep",
    "maskdino_r50_coco_instance_seg_50ep_hid1024",
    "maskdino_r50_coco_panoptic_seg_50ep",
    "maskdino_r50_ade20k_semantic_seg_160k",
    "maskdino_r50_cityscapes_semantic_seg_90k",
    "maskdino_swinl_coco_instance_seg_50ep",
    "maskdino_swinl_coco_instance_seg_50ep_no_mask_enhance",
    "maskdino_swinl_coco_panoptic_seg_50ep",
]

# Small widths everywhere; GroupNorm(32, .) needs multiples of 32.
_SMALL_HEAD = [
    "model.num_queries=16",
    "model.sem_seg_head.pixel_decoder.conv_dim=64",
    "model.sem_seg_head.pixel_decoder.mask_dim=64",
    "model.sem_seg_head.pixel_decoder.transformer_dim_feedforward=64",
    "model.sem_seg_head.pixel_decoder.transformer_enc_layers=1",
    "model.sem_seg_head.pixel_decoder.transformer_nheads=4",
    "model.sem_seg_head.transformer_predictor.hidden_dim=64",
    "model.sem_seg_head.transformer_predictor.nheads=4",
    "model.sem_seg_head.transformer_predictor.dim_feedforward=64",
    "model.sem_seg_head.transformer_predictor.dec_layers=2",
    "model.sem_seg_head.transformer_predictor.dn_num=12",
    "model.criterion.num_points=64",
]


def _shapes(channels: list[int]) -> str:
    items = ", ".join(
        f"res{i + 2}: {{_target_: detrex_ext.layers.ShapeSpec, channels: {c}, stride: {4 * 2**i}}}"
        for i, c in enumerate(channels)
    )
    return f"model.sem_seg_head.pixel_decoder.input_shape={{{items}}}"


def reduced_overrides(name: str) -> list[str]:
    """Overrides that shrink a shipped config to a CPU-test-sized model (same structure)."""
    if "swinl" in name:
        backbone = [
            "model.backbone.embed_dim=32",
            "model.backbone.depths=[1,1,1,1]",
            "model.backbone.num_heads=[1,2,2,4]",
            "model.backbone.window_size=4",
            "model.backbone.drop_path_rate=0.0",
            _shapes([32, 64, 128, 256]),
        ]
    else:
        backbone = [
            "model.backbone.depth=18",
            _shapes([64, 128, 256, 512]),
        ]
    return backbone + _SMALL_HEAD


def load_config(name: str, reduced: bool = False):
    """A shipped config (`maskdino/<name>.py`), optionally reduced for CPU tests."""
    cfg = get_config(f"maskdino/{name}.py")
    if reduced:
        LazyConfig.apply_overrides(cfg, reduced_overrides(name))
    return cfg


def synthetic_instances(h: int, w: int, boxes: list[list[int]], classes: list[int]) -> Instances:
    """Filled-rectangle instances: xyxy pixel boxes (exclusive max) -> masks and boxes."""
    inst = Instances((h, w))
    masks = torch.zeros(len(boxes), h, w, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        masks[i, y0:y1, x0:x1] = True
    inst.gt_masks = masks
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return inst


def synthetic_image(h: int, w: int, boxes: list[list[int]], seed: int = 0) -> torch.Tensor:
    """uint8 `[3, h, w]`: a smooth background with a distinct colour inside each box."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    image = torch.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 64])
    image = image.float() + torch.rand(3, h, w, generator=g) * 20
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        colour = torch.tensor([(60 * i + 200) % 256, (90 * i) % 256, (150 + 40 * i) % 256])
        image[:, y0:y1, x0:x1] = colour[:, None, None].float()
    return image.clamp(0, 255).to(torch.uint8)


def two_image_batch(num_classes: int = 80) -> list[dict]:
    """Two images of different sizes with 3 and 2 objects (instance training input)."""
    specs = [
        (64, 80, [[4, 6, 30, 40], [40, 10, 76, 30], [20, 44, 60, 62]], [1, 5, 2]),
        (72, 56, [[8, 8, 40, 50], [30, 40, 54, 70]], [3, 1]),
    ]
    batch = []
    for seed, (h, w, boxes, classes) in enumerate(specs):
        classes = [c % num_classes for c in classes]
        batch.append(
            {
                "image": synthetic_image(h, w, boxes, seed),
                "instances": synthetic_instances(h, w, boxes, classes),
                "height": h,
                "width": w,
            }
        )
    return batch


def semantic_batch(num_classes: int) -> list[dict]:
    """Two semantic training inputs (`sem_seg` only; the model builds per-class targets)."""
    batch = []
    for seed, (h, w) in enumerate([(64, 64), (48, 80)]):
        label = torch.full((h, w), 255, dtype=torch.long)
        label[: h // 2] = 0 % num_classes
        label[h // 2 :, : w // 2] = 3 % num_classes
        label[h // 2 :, w // 2 :] = 7 % num_classes
        image = synthetic_image(h, w, [[0, 0, w, h // 2]], seed)
        batch.append({"image": image, "sem_seg": label, "height": h, "width": w})
    return batch
