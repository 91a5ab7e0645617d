"""Overfitting two synthetic images with the configured optimizer and clipping lowers the loss."""

from __future__ import annotations

import torch
from maskdino_test_utils import load_config, two_image_batch

from detrex_ext.config import LazyConfig, instantiate

GEOMETRY = ["loss_mask", "loss_dice", "loss_bbox"]


def test_loss_decreases_when_overfitting_two_images():
    torch.manual_seed(0)
    cfg = load_config("maskdino_r50_coco_instance_seg_50ep", reduced=True)
    # A 10x learning rate and a frozen backbone keep the test short.
    LazyConfig.apply_overrides(cfg, ["optimizer.lr=1e-3", "model.backbone.freeze_at=5"])
    model = instantiate(cfg.model).train()
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    batch = two_image_batch()
    history = []
    for _ in range(20):
        losses = model(batch)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad.params.max_norm)
        optimizer.step()
        history.append({k: v.item() for k, v in losses.items()})
    first, last = history[0], history[-1]
    assert sum(last.values()) < 0.25 * sum(first.values())
    # Not only the class logits: the matched masks and boxes of the last layer improve too.
    assert sum(last[k] for k in GEOMETRY) < 0.8 * sum(first[k] for k in GEOMETRY)
