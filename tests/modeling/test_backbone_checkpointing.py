"""Activation checkpointing of the backbones: the same outputs, gradients and batch-norm
statistics as without it, fewer bytes kept for the backward, and nothing checkpointed where
nothing can be saved (eval mode, no autograd, frozen stages)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.utils.checkpoint

from detrex_ext.layers.activation_checkpointing import (
    saved_activation_bytes,
    set_activation_checkpointing,
)
from detrex_ext.modeling import SwinTransformer, TimmBackbone, build_resnet_backbone

SWIN_TINY = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4)


def _resnet(**kwargs):
    return build_resnet_backbone(depth=18, norm="BN", **kwargs)


def _swin(**kwargs):
    # stochastic depth draws random numbers inside every checkpointed block
    return SwinTransformer(**SWIN_TINY, drop_path_rate=0.3, **kwargs)


def _timm(**kwargs):
    return TimmBackbone("resnet10t", norm="BN", **kwargs)


BUILDERS = {"resnet": _resnet, "swin": _swin, "timm": _timm}


@pytest.fixture
def checkpoint_calls(monkeypatch):
    """Counts calls of torch.utils.checkpoint.checkpoint (and still runs it)."""
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", spy)
    return calls


def _pair(name: str, **kwargs):
    """The same backbone (same weights) without and with checkpointing, in training mode."""
    torch.manual_seed(0)
    plain = BUILDERS[name](**kwargs).train()
    flagged = copy.deepcopy(plain)
    assert set_activation_checkpointing(torch.nn.Sequential(flagged), True) == ["0"]
    return plain, flagged


def _train_step(backbone, images):
    """Forward + backward of a fixed function of every output; returns (outputs, grads, saved
    activation bytes)."""
    torch.manual_seed(1)
    with saved_activation_bytes(backbone) as saved:
        outputs = backbone(images)
    loss = sum((f * torch.linspace(-1, 1, f.numel()).view_as(f)).sum() for f in outputs.values())
    loss.backward()
    grads = {n: p.grad for n, p in backbone.named_parameters() if p.requires_grad}
    return outputs, grads, saved["bytes"]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_same_outputs_gradients_and_statistics_with_less_saved(name, checkpoint_calls):
    plain, flagged = _pair(name)
    images = torch.randn(2, 3, 96, 128)
    out_a, grads_a, bytes_a = _train_step(plain, images)
    assert not checkpoint_calls
    out_b, grads_b, bytes_b = _train_step(flagged, images)
    assert checkpoint_calls and all(c["use_reentrant"] is False for c in checkpoint_calls)
    assert all(c["preserve_rng_state"] for c in checkpoint_calls)
    for key in out_a:
        torch.testing.assert_close(out_b[key], out_a[key], rtol=0, atol=0)
    assert grads_a.keys() == grads_b.keys()
    assert all(g is not None for g in grads_a.values())
    for key in grads_a:
        torch.testing.assert_close(grads_b[key], grads_a[key], rtol=1e-6, atol=1e-7, msg=key)
    # batch norms: the recomputation does not update the running statistics a second time
    for (key, buf_a), buf_b in zip(plain.named_buffers(), flagged.buffers()):
        torch.testing.assert_close(buf_b, buf_a, rtol=0, atol=0, msg=key)
        if key.endswith("num_batches_tracked"):
            assert int(buf_b) == 1
    print(f"{name}: saved activation bytes {bytes_b} / {bytes_a} = {bytes_b / bytes_a:.3f}")
    assert bytes_b < 0.5 * bytes_a


@pytest.mark.parametrize("name", list(BUILDERS))
def test_nothing_checkpointed_in_eval_mode_or_without_autograd(name, checkpoint_calls):
    plain, flagged = _pair(name)
    images = torch.randn(1, 3, 64, 64)

    def seeded(backbone):
        torch.manual_seed(1)  # the same stochastic-depth draws in training mode
        return backbone(images)

    with torch.no_grad():
        train_mode = seeded(flagged), seeded(plain)
    plain.eval()
    flagged.eval()
    eval_mode = seeded(flagged), seeded(plain)
    assert not checkpoint_calls
    for flagged_out, plain_out in (train_mode, eval_mode):
        for key in plain_out:
            assert torch.equal(flagged_out[key], plain_out[key])


def test_resnet_checkpoints_only_trainable_blocks(checkpoint_calls):
    # freeze_at=3: stem, res2 and res3 are frozen; res4 and res5 have 2 blocks each (R18)
    _, flagged = _pair("resnet", freeze_at=3)
    _train_step(flagged, torch.randn(1, 3, 64, 64))
    assert len(checkpoint_calls) == 4


def test_swin_frozen_stages_are_not_checkpointed(checkpoint_calls):
    # freeze_at=2: patch embedding and the first stage (2 blocks) frozen; 6 blocks remain
    _, flagged = _pair("swin", freeze_at=2)
    _train_step(flagged, torch.randn(1, 3, 64, 64))
    assert len(checkpoint_calls) == 6


def test_constructor_arguments_match_the_switch():
    assert _resnet(activation_checkpointing=True).activation_checkpointing
    assert all(layer.use_checkpoint for layer in _swin(use_checkpoint=True).layers)
    assert _timm(activation_checkpointing=True).activation_checkpointing
    swin = _swin()
    swin.set_activation_checkpointing(True)
    assert all(layer.use_checkpoint for layer in swin.layers)
    # same parameters and state_dict keys either way
    assert list(_resnet(activation_checkpointing=True).state_dict()) == list(_resnet().state_dict())


def test_timm_models_without_a_module_list_use_timms_own_switch():
    torch.manual_seed(0)
    vit = TimmBackbone(
        "vit_tiny_patch16_224",
        img_size=64,
        depth=2,
        out_indices=(1,),
        out_features=("res4",),
        norm="",
        activation_checkpointing=True,
    )
    assert vit.model.model.grad_checkpointing
    plain = copy.deepcopy(vit)
    plain.set_activation_checkpointing(False)
    assert not plain.model.model.grad_checkpointing
    images = torch.randn(1, 3, 64, 64)
    out_a, grads_a, _ = _train_step(plain.train(), images)
    out_b, grads_b, _ = _train_step(vit.train(), images)
    torch.testing.assert_close(out_b["res4"], out_a["res4"], rtol=0, atol=0)
    for key in grads_a:
        torch.testing.assert_close(grads_b[key], grads_a[key], rtol=1e-6, atol=1e-7, msg=key)
