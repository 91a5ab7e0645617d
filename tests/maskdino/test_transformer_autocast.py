"""`transformer_autocast`: the encoder/decoder layers under the caller's bf16 autocast with the
deformable-attention coordinates kept in fp32; off (the default) nothing changes."""

from __future__ import annotations

import pytest
import torch
from maskdino_test_utils import load_config, two_image_batch

import detrex_ext.layers.multi_scale_deform_attn as msda_module
from detrex_ext.config import LazyConfig, instantiate
from detrex_ext.layers import MultiScaleDeformableAttention
from detrex_ext.layers.multi_scale_deform_attn_op import multi_scale_deformable_attn

CONFIG = "maskdino_r50_coco_instance_seg_50ep"
FLAG = "model.sem_seg_head.pixel_decoder.transformer_autocast"
BF16 = {"device_type": "cpu", "dtype": torch.bfloat16}


def build(flag: bool | None, seed: int = 0, name: str = CONFIG):
    """Seeded reduced model; `flag=None` removes the config keys (constructor defaults)."""
    cfg = load_config(name, reduced=True)
    if flag is None:
        del cfg.model.sem_seg_head.transformer_predictor["transformer_autocast"]
        del cfg.model.sem_seg_head.pixel_decoder["transformer_autocast"]
    else:
        LazyConfig.apply_overrides(cfg, [f"{FLAG}={flag}"])
    torch.manual_seed(seed)
    return instantiate(cfg.model)


def head_outputs(model, batch, autocast: bool) -> dict:
    """The prediction dict the head returns inside `model(batch)` (eval)."""
    captured = {}
    hook = model.sem_seg_head.register_forward_hook(lambda m, i, o: captured.update(o[0]))
    with torch.no_grad(), torch.autocast(**BF16, enabled=autocast):
        model(batch)
    hook.remove()
    return {k: captured[k] for k in ("pred_logits", "pred_masks", "pred_boxes")}


def record_msda_calls(monkeypatch) -> list:
    """Replace the op entry used by the module; record (value, locations, weights) dtypes."""
    calls = []

    def recording(value, shapes, starts, locations, weights):
        calls.append((value.dtype, locations.dtype, weights.dtype))
        return multi_scale_deformable_attn(value, shapes, starts, locations, weights)

    monkeypatch.setattr(msda_module, "multi_scale_deformable_attn", recording)
    return calls


# ------------------------------------------------------------------ the MSDA module
def old_msda_forward(module, query, reference_points, value_in, shapes, starts):
    """The module's forward before the change (offsets from the module call, then promoted)."""
    batch, num_queries, _ = query.shape
    heads, levels, points = module.num_heads, module.num_levels, module.num_points
    value = module.value_proj(value_in).view(batch, value_in.shape[1], heads, -1)
    offsets = module.sampling_offsets(query)
    offsets = offsets.to(torch.promote_types(offsets.dtype, torch.float32))
    offsets = offsets.view(batch, num_queries, heads, levels, points, 2)
    logits = module.attention_weights(query)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    weights = logits.view(batch, num_queries, heads, levels * points).softmax(-1)
    weights = weights.view(batch, num_queries, heads, levels, points)
    if reference_points.shape[-1] == 2:
        normalizer = torch.tensor(shapes, dtype=offsets.dtype).flip(-1)
        locations = (
            reference_points[:, :, None, :, None, :]
            + offsets / normalizer[None, None, None, :, None, :]
        )
    else:
        centers = reference_points[:, :, None, :, None, :2]
        sizes = reference_points[:, :, None, :, None, 2:]
        locations = centers + offsets / points * sizes * 0.5
    output = multi_scale_deformable_attn(value, shapes, starts, locations, weights)
    return module.output_proj(output)


def msda_inputs(coords: int):
    shapes = [(6, 7), (3, 4), (2, 2)]
    starts = [0, 42, 54]
    gen = torch.Generator().manual_seed(coords)
    module = MultiScaleDeformableAttention(embed_dim=32, num_heads=4, num_levels=3, num_points=2)
    with torch.no_grad():  # non-trivial offsets and weights
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    query = torch.randn(2, 5, 32, generator=gen)
    value = torch.randn(2, 58, 32, generator=gen)
    ref = torch.rand(2, 5, 3, coords, generator=gen) * 0.8 + 0.1
    return module, (query, ref, value, shapes, starts)


@pytest.mark.parametrize("coords", [2, 4])
def test_msda_fp32_output_and_gradients_are_bit_identical_to_the_old_forward(coords):
    module, args = msda_inputs(coords)
    new = module(*args, None)
    old = old_msda_forward(module, *args)
    assert torch.equal(new, old)
    grads_new = torch.autograd.grad(new.square().sum(), list(module.parameters()))
    grads_old = torch.autograd.grad(old.square().sum(), list(module.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(grads_new, grads_old))


@pytest.mark.parametrize("coords", [2, 4])
def test_msda_under_bf16_autocast_samples_at_the_fp32_locations(coords, monkeypatch):
    module, (query, ref, value, shapes, starts) = msda_inputs(coords)
    seen = []

    def recording(value_, shapes_, starts_, locations, weights):
        seen.append((value_, locations, weights))
        return multi_scale_deformable_attn(value_, shapes_, starts_, locations, weights)

    monkeypatch.setattr(msda_module, "multi_scale_deformable_attn", recording)
    fp32 = module(query, ref, value, shapes, starts)
    with torch.autocast(**BF16):
        bf16 = module(query, ref, value, shapes, starts)
    (_, loc32, w32), (value16, loc16, w16) = seen
    assert value16.dtype == torch.bfloat16 and bf16.dtype == torch.bfloat16
    # Offsets, softmax and locations are computed exactly as without autocast.
    assert loc16.dtype == w16.dtype == torch.float32
    assert torch.equal(loc16, loc32) and torch.equal(w16, w32)
    assert (bf16.float() - fp32).abs().max() < 0.05 * fp32.abs().max()


# ------------------------------------------------------------------ the model
def test_one_override_switches_encoder_and_decoder():
    for name in (CONFIG, "maskdino_swinl_coco_instance_seg_50ep"):
        for flag in (False, True):
            model = build(flag, name=name)
            layers = model.sem_seg_head.predictor.decoder.layers
            assert model.sem_seg_head.pixel_decoder.transformer_autocast is flag
            assert all(layer.transformer_autocast is flag for layer in layers)


def test_flag_off_is_the_default_and_keeps_the_transformer_in_fp32(monkeypatch):
    batch = two_image_batch()
    default, off = build(None).eval(), build(False).eval()
    assert not default.sem_seg_head.pixel_decoder.transformer_autocast
    dtypes = []
    encoder_linear = off.sem_seg_head.pixel_decoder.transformer.encoder.layers[0].linear1
    decoder_linear = off.sem_seg_head.predictor.decoder.layers[0].linear1
    for linear in (encoder_linear, decoder_linear):
        linear.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    calls = record_msda_calls(monkeypatch)
    expected = head_outputs(default, batch, autocast=True)
    got = head_outputs(off, batch, autocast=True)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert set(dtypes) == {torch.float32}
    assert calls and set(calls) == {(torch.float32,) * 3}


def test_flag_on_runs_the_layers_in_bf16_with_fp32_locations(monkeypatch):
    model = build(True).eval()
    dtypes = {"encoder": [], "decoder": []}
    encoder = model.sem_seg_head.pixel_decoder.transformer.encoder.layers[0]
    decoder = model.sem_seg_head.predictor.decoder.layers[0]
    encoder.linear1.register_forward_hook(lambda m, i, o: dtypes["encoder"].append(o.dtype))
    decoder.linear1.register_forward_hook(lambda m, i, o: dtypes["decoder"].append(o.dtype))
    calls = record_msda_calls(monkeypatch)
    outputs = head_outputs(model, two_image_batch(), autocast=True)
    assert dtypes == {"encoder": [torch.bfloat16], "decoder": [torch.bfloat16]}
    # 1 encoder layer + 2 decoder layers, each: bf16 values, fp32 locations and weights.
    assert calls == [(torch.bfloat16, torch.float32, torch.float32)] * 3
    assert all(torch.isfinite(v).all() for v in outputs.values())


@pytest.mark.parametrize("seed", [0, 1])
def test_flag_on_stays_close_to_fp32(seed):
    """Encoder features and decoder outputs (queries, refined boxes) vs fp32 on the same inputs.

    Whole-model predictions are not comparable elementwise: bf16 noise in the backbone/heads
    (there even with the flag off) flips the two-stage top-k query selection. So the encoder
    and decoder are run on the fp32 model's own inputs. Measured worst relative error (max abs
    error / max abs value) over seeds 0-7: encoder levels 0.0037, mask features 0.0018, decoder
    queries 0.0052, i.e. about one bf16 rounding (2^-8 = 0.0039); the bound 0.02 leaves ~4x.
    """
    model = build(True, seed).eval()
    decoder = model.sem_seg_head.predictor.decoder
    with torch.no_grad():  # the box head starts at zero; make the refinement non-trivial
        torch.nn.init.normal_(model.sem_seg_head.predictor._bbox_embed.layers[-1].weight, std=0.1)
    captured = {}
    model.backbone.register_forward_hook(lambda m, i, o: captured.setdefault("features", o))
    decoder.register_forward_pre_hook(lambda m, args: captured.setdefault("decoder", args))
    with torch.no_grad():
        model(two_image_batch())
    pixel_decoder = model.sem_seg_head.pixel_decoder

    def run(autocast: bool):
        with torch.no_grad(), torch.autocast(**BF16, enabled=autocast):
            mask_features, _, levels = pixel_decoder.forward_features(captured["features"])
            hs, refs = decoder(*captured["decoder"])
        return [mask_features, *levels, *hs], refs

    (feats32, refs32), (feats16, refs16) = run(False), run(True)
    for a, b in zip(feats16, feats32):
        assert a.dtype == torch.float32
        assert (a - b).abs().max() <= 0.02 * b.abs().max()
    box_error = max((a - b).abs().max().item() for a, b in zip(refs16, refs32))
    assert 0 < box_error < 0.01  # boxes in [0, 1]


def test_training_step_with_the_flag_on_has_finite_losses_and_gradients():
    model = build(True).train()
    with torch.autocast(**BF16):
        losses = model(two_image_batch())
    total = sum(losses.values())
    assert total.dtype == torch.float32 and torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    encoder = model.sem_seg_head.pixel_decoder.transformer.encoder.layers[0]
    assert encoder.self_attn.sampling_offsets.weight.grad.abs().sum() > 0
