"""`model.activation_checkpointing=True`: one training step of Mask DINO gives the same losses,
gradients and batch-norm statistics as without it, keeps far fewer activation bytes for the
backward, changes nothing at inference, and round-trips through a LazyConfig override."""

from __future__ import annotations

import pytest
import torch
import torch.utils.checkpoint
from maskdino_test_utils import load_config, synthetic_image, synthetic_instances, two_image_batch
from torch import nn

from detrex_ext.config import LazyConfig, get_config, instantiate
from detrex_ext.layers.activation_checkpointing import saved_activation_bytes
from detrex_projects.maskdino.modeling import MaskDINO

R50 = "maskdino_r50_coco_instance_seg_50ep"
SWIN = "maskdino_swinl_coco_instance_seg_50ep"
DEMO = "maskdino_demo_synthetic"  # a timm resnet10t with trained batch norms
# (config, extra overrides): the reduced R50 (frozen BN); with trained BN, frozen early stages
# and dropout inside the encoder / decoder layers; Swin with stochastic depth; the demo (timm)
CASES = {
    "r50": (R50, []),
    "r50_bn_dropout": (
        R50,
        [
            "model.backbone.norm=BN",
            "model.backbone.freeze_at=2",
            "model.sem_seg_head.pixel_decoder.transformer_dropout=0.1",
            "model.sem_seg_head.transformer_predictor.dropout=0.1",
        ],
    ),
    "swin_drop_path": (SWIN, ["model.backbone.drop_path_rate=0.2"]),
    "demo_timm": (DEMO, []),
}


def _config(name: str, flag: bool, overrides=()):
    cfg = get_config(f"maskdino/{name}.py") if name == DEMO else load_config(name, reduced=True)
    LazyConfig.apply_overrides(cfg, [f"model.activation_checkpointing={flag}", *overrides])
    return cfg


def _model(name: str, flag: bool, overrides=()) -> nn.Module:
    torch.manual_seed(0)  # the flag draws no random numbers: the same weights either way
    return instantiate(_config(name, flag, overrides).model).train()


def _batch(name: str, scale: int = 1) -> list[dict]:
    """`two_image_batch`, optionally with images and boxes `scale` times larger."""
    batch = two_image_batch(5 if name == DEMO else 80)
    if scale == 1:
        return batch
    larger = []
    for seed, item in enumerate(batch):
        inst = item["instances"]
        h, w = (scale * s for s in inst.image_size)
        boxes = (inst.gt_boxes.tensor * scale).long().tolist()
        larger.append(
            {
                "image": synthetic_image(h, w, boxes, seed),
                "instances": synthetic_instances(h, w, boxes, inst.gt_classes.tolist()),
            }
        )
    return larger


def _train_step(model: nn.Module, batch: list[dict]):
    """One seeded forward + backward: (losses, gradients, saved activation bytes)."""
    torch.manual_seed(1)  # denoising noise, point sampling, dropout
    with saved_activation_bytes(model) as saved:
        losses = model(batch)
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads, saved["bytes"]


@pytest.mark.parametrize("case", list(CASES))
def test_training_step_is_unchanged(case):
    name, overrides = CASES[case]
    plain, flagged = _model(name, False, overrides), _model(name, True, overrides)
    for a, b in zip(plain.state_dict().values(), flagged.state_dict().values()):
        assert torch.equal(a, b)
    batch = _batch(name)
    losses_a, grads_a, _ = _train_step(plain, batch)
    losses_b, grads_b, _ = _train_step(flagged, batch)
    assert losses_a.keys() == losses_b.keys() and len(losses_a) > 20  # every auxiliary loss
    for key in losses_a:
        torch.testing.assert_close(losses_b[key], losses_a[key], rtol=1e-6, atol=1e-7, msg=key)
    trainable = {n for n, p in plain.named_parameters() if p.requires_grad}
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 0.9 * len(trainable)
    for key in grads_a:
        torch.testing.assert_close(grads_b[key], grads_a[key], rtol=1e-6, atol=1e-7, msg=key)
    for (key, a), b in zip(plain.named_buffers(), flagged.buffers()):
        assert torch.equal(a, b), key  # batch-norm statistics updated once


@pytest.mark.parametrize("name", [R50, SWIN])
def test_saves_far_fewer_activation_bytes(name):
    batch = _batch(name, scale=2)
    _, _, plain = _train_step(_model(name, False), batch)
    _, _, flagged = _train_step(_model(name, True), batch)
    print(f"{name} (reduced, 128-160 px): saved bytes {flagged} / {plain} = {flagged / plain:.3f}")
    assert flagged < 0.6 * plain


def test_inference_and_no_grad_are_unchanged(monkeypatch):
    calls = []
    original = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(
        torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    plain, flagged = _model(R50, False), _model(R50, True)
    batch = two_image_batch()
    with torch.no_grad():
        torch.manual_seed(1)
        losses_a = plain(batch)
        torch.manual_seed(1)
        losses_b = flagged(batch)
        plain.eval()
        flagged.eval()
        results_a, results_b = plain(batch), flagged(batch)
    assert not calls
    for key in losses_a:
        assert torch.equal(losses_a[key], losses_b[key]), key
    for a, b in zip(results_a, results_b):
        inst_a, inst_b = a["instances"], b["instances"]
        for field in ("scores", "pred_classes", "pred_masks"):
            assert torch.equal(getattr(inst_a, field), getattr(inst_b, field)), field
        assert torch.equal(inst_a.pred_boxes.tensor, inst_b.pred_boxes.tensor)


@pytest.mark.parametrize("name", [R50, SWIN, DEMO])
def test_flag_round_trips_through_an_override(name, tmp_path):
    cfg = _config(name, False)
    assert cfg.model.activation_checkpointing is False
    LazyConfig.apply_overrides(cfg, ["model.activation_checkpointing=True"])
    LazyConfig.save(cfg, str(tmp_path / "config.yaml"))
    again = LazyConfig.load(str(tmp_path / "config.yaml"))
    assert again.model.activation_checkpointing is True
    model = instantiate(again.model)
    head = model.sem_seg_head
    assert head.pixel_decoder.transformer.encoder.activation_checkpointing
    assert head.predictor.decoder.activation_checkpointing
    if name == SWIN:
        assert all(layer.use_checkpoint for layer in model.backbone.layers)
    else:
        assert model.backbone.activation_checkpointing
    # off by default: nothing switched on
    model = instantiate(_config(name, False).model)
    assert not model.sem_seg_head.predictor.decoder.activation_checkpointing


def test_flag_without_any_supporting_module_is_a_clear_error():
    with pytest.raises(ValueError, match="no submodule supports it"):
        MaskDINO(
            backbone=nn.Identity(),
            sem_seg_head=nn.Identity(),
            criterion=nn.Identity(),
            num_classes=2,
            metadata=None,
            activation_checkpointing=True,
        )
