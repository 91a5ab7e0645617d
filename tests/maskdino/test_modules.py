"""Structure and Mask DINO specifics of the modules: level orders, projections, proposals,
mask-enhanced anchors, shared-module aliases (spec sections 2-4, quirks of 10.2)."""

from __future__ import annotations

import math

import pytest
import torch
from maskdino_test_utils import load_config

from detrex_ext.config import instantiate
from detrex_projects.maskdino.modeling.query_selection import (
    encoder_output_proposals,
    masks_to_anchor_boxes,
)


@pytest.fixture(scope="module")
def r50_reduced():
    return instantiate(load_config("maskdino_r50_coco_instance_seg_50ep", reduced=True).model)


def proj_in_channels(pixel_decoder):
    return [proj[0].in_channels for proj in pixel_decoder.input_proj]


def test_input_projection_order_follows_feature_order():
    """low2high: res3, res4, res5, then a 3x3 stride-2 conv on raw res5; high2low: res5 first."""
    low2high = instantiate(
        load_config("maskdino_r50_coco_instance_seg_50ep").model.sem_seg_head.pixel_decoder
    )
    assert proj_in_channels(low2high) == [512, 1024, 2048, 2048]
    extra = low2high.input_proj[3][0]
    assert (extra.kernel_size, extra.stride, extra.padding) == ((3, 3), (2, 2), (1, 1))
    high2low = instantiate(
        load_config("maskdino_r50_coco_instance_seg_50ep_hid1024").model.sem_seg_head.pixel_decoder
    )
    assert proj_in_channels(high2low) == [2048, 1024, 512]
    assert high2low.transformer.level_embed.shape == (3, 256)


def test_swin_uses_stride4_in_the_encoder_and_one_fpn_step():
    cfg = load_config("maskdino_swinl_coco_instance_seg_50ep", reduced=True)
    pixel_decoder = instantiate(cfg.model.sem_seg_head.pixel_decoder)
    assert proj_in_channels(pixel_decoder) == [32, 64, 128, 256, 256]
    assert pixel_decoder.num_fpn_levels == 1  # max(log2(4) - log2(4), 1)
    assert pixel_decoder.adapter_1.weight.shape[1] == 32


def record_level_shapes(model, height, width):
    """Spatial shapes seen by the encoder's and the decoder's deformable attention."""
    seen = {}

    def hook(name):
        def record(module, args):
            seen[name] = [tuple(int(v) for v in hw) for hw in args[3]]

        return record

    handles = [
        model.sem_seg_head.pixel_decoder.transformer.encoder.layers[
            0
        ].self_attn.register_forward_pre_hook(hook("encoder")),
        model.sem_seg_head.predictor.decoder.layers[0].cross_attn.register_forward_pre_hook(
            hook("decoder")
        ),
    ]
    model.eval()
    with torch.no_grad():
        model([{"image": torch.zeros(3, height, width, dtype=torch.uint8)}])
    for handle in handles:
        handle.remove()
    return seen


def test_encoder_and_decoder_level_orders_are_reversed(r50_reduced):
    # Spec 4.1 (verified on the official code) for a 512x640 input.
    seen = record_level_shapes(r50_reduced, 512, 640)
    assert seen["encoder"] == [(64, 80), (32, 40), (16, 20), (8, 10)]
    assert seen["decoder"] == [(8, 10), (16, 20), (32, 40), (64, 80)]


def test_high2low_levels():
    cfg = load_config("maskdino_r50_coco_instance_seg_50ep_hid1024", reduced=True)
    seen = record_level_shapes(instantiate(cfg.model), 256, 320)
    assert seen["encoder"] == [(8, 10), (16, 20), (32, 40)]
    assert seen["decoder"] == [(32, 40), (16, 20), (8, 10)]


def test_proposals_sizes_and_invalid_border():
    """1024 input, decoder order P6..P3: sizes 0.05 * 2**lvl; border cells of the 64x64 and
    128x128 levels are invalid (centre 0.5/64 < 0.01): 252 and 508 tokens (spec 4.2)."""
    shapes = [(16, 16), (32, 32), (64, 64), (128, 128)]
    tokens = sum(h * w for h, w in shapes)
    memory = torch.ones(1, tokens, 8)
    out_memory, proposals = encoder_output_proposals(memory, shapes)
    start = 0
    for lvl, ((h, w), invalid) in enumerate(zip(shapes, [0, 0, 252, 508])):
        level = proposals[0, start : start + h * w]
        bad = torch.isinf(level).any(-1)
        assert int(bad.sum()) == invalid
        assert torch.all(out_memory[0, start : start + h * w][bad] == 0)
        good = level[~bad].sigmoid()
        assert torch.allclose(good[:, 2:], torch.full_like(good[:, 2:], 0.05 * 2**lvl), atol=1e-6)
        start += h * w
    # first token of the 16x16 level: centre (0.5/16, 0.5/16)
    assert proposals[0, 0, :2].sigmoid().tolist() == pytest.approx([1 / 32, 1 / 32], abs=1e-6)


def test_mask_enhanced_anchor_conventions():
    logits = torch.full((1, 2, 8, 10), -1.0)
    logits[0, 0, 2:5, 3:7] = 1.0  # rows 2..4, cols 3..6
    inclusive = masks_to_anchor_boxes(logits, "mask2box").sigmoid()[0]
    exclusive = masks_to_anchor_boxes(logits, "bitmask").sigmoid()[0]
    # mask2box: (x0, y0, x1, y1) = (3, 2, 6, 4) -> cx 4.5/10, cy 3/8, w 3/10, h 2/8
    assert inclusive[0].tolist() == pytest.approx([0.45, 0.375, 0.3, 0.25], abs=1e-5)
    # bitmask: (3, 2, 7, 5) -> cx 5/10, cy 3.5/8, w 4/10, h 3/8
    assert exclusive[0].tolist() == pytest.approx([0.5, 0.4375, 0.4, 0.375], abs=1e-5)
    # Empty masks: mask2box gives (1e8, 1e8, 0, 0) -> logits +-11.51; bitmask all -11.51.
    raw = masks_to_anchor_boxes(logits, "mask2box")[0, 1]
    limit = math.log(1e5)  # inverse_sigmoid clamps at eps = 1e-5
    assert raw.tolist() == pytest.approx([limit, limit, -limit, -limit], abs=1e-3)
    raw = masks_to_anchor_boxes(logits, "bitmask")[0, 1]
    assert raw.tolist() == pytest.approx([-limit] * 4, abs=1e-3)


def test_shared_modules_are_one_object(r50_reduced):
    predictor = r50_reduced.sem_seg_head.predictor
    assert predictor.decoder_norm is predictor.decoder.norm
    assert predictor.bbox_embed is predictor.decoder.bbox_embed
    assert all(m is predictor._bbox_embed for m in predictor.bbox_embed)
    # The last layer of the box MLP starts at zero (official init).
    assert predictor._bbox_embed.layers[-1].weight.abs().sum() == 0
    # Parameters count once; the state_dict lists every alias.
    keys = r50_reduced.state_dict().keys()
    layers = len(predictor.bbox_embed)
    assert sum(k.endswith("layers.2.bias") and "bbox_embed" in k for k in keys) == 1 + 2 * layers


def test_inference_masks_only_for_the_last_layer(r50_reduced):
    r50_reduced.eval()
    features = r50_reduced.backbone(torch.zeros(1, 3, 64, 64))
    with torch.no_grad():
        outputs, dn_meta = r50_reduced.sem_seg_head(features)
    assert dn_meta is None and outputs["pred_masks"] is not None
    assert all(aux["pred_masks"] is None for aux in outputs["aux_outputs"])
    assert outputs["interm_outputs"]["pred_masks"].shape[-2:] == (16, 16)


def test_query_selection_boxes_equal_the_all_token_computation(r50_reduced):
    """The box MLP runs on the Q selected tokens only; the interm boxes are those of the
    official order of work (box MLP on every token plus its proposal, then the top-k rows)."""
    predictor = r50_reduced.sem_seg_head.predictor
    torch.manual_seed(0)
    for layer in predictor._bbox_embed.layers:  # the official init zeroes the last layer
        torch.nn.init.normal_(layer.weight, std=0.2)
    shapes = [(8, 8), (4, 4), (2, 2), (1, 1)]
    memory = torch.randn(2, sum(h * w for h, w in shapes), predictor.hidden_dim)
    mask_features = torch.randn(2, predictor.mask_embed.layers[-1].out_features, 16, 16)
    _, _, interm = predictor._select_queries(memory, shapes, mask_features)

    output_memory, proposals = encoder_output_proposals(memory, shapes)
    output_memory = predictor.enc_output_norm(predictor.enc_output(output_memory))
    topk = predictor.class_embed(output_memory).max(-1)[0].topk(predictor.num_queries, dim=1)[1]
    every_box = predictor._bbox_embed(output_memory) + proposals
    expected = torch.gather(every_box, 1, topk[..., None].expand(-1, -1, 4)).sigmoid()
    torch.testing.assert_close(interm["pred_boxes"], expected, rtol=1e-5, atol=1e-6)


def test_channels_last_gives_the_nchw_results_and_layout():
    """model.channels_last converts the backbone / pixel-decoder conv weights to NHWC; the raw
    outputs equal those of the NCHW model with the same weights up to float rounding (different
    convolution kernels sum in a different order)."""
    models = {}
    for channels_last in (False, True):
        cfg = load_config("maskdino_r50_coco_instance_seg_50ep", reduced=True)
        cfg.model.channels_last = channels_last
        torch.manual_seed(0)
        models[channels_last] = instantiate(cfg.model).eval()
    models[True].load_state_dict(models[False].state_dict())
    conv = models[True].backbone.stem.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert models[False].backbone.stem.conv1.weight.is_contiguous()
    image = (torch.rand(3, 64, 96, generator=torch.Generator().manual_seed(1)) * 255).byte()
    outputs = {}
    for channels_last, model in models.items():
        features = model.backbone(torch.zeros(1, 3, 8, 8))  # the backbone takes either layout
        assert all(f.shape[0] == 1 for f in features.values())
        with torch.no_grad():
            outputs[channels_last] = model([{"image": image}])[0]["instances"]
    ref, got = outputs[False], outputs[True]
    ref_scores, ref_order = ref.scores.sort(descending=True)
    got_scores, got_order = got.scores.sort(descending=True)
    torch.testing.assert_close(got_scores, ref_scores, rtol=1e-4, atol=1e-5)
    # classes and boxes by rank, where the rank is not a near-tie
    gaps = (ref_scores[:-1] - ref_scores[1:]).abs()
    clear = torch.cat([gaps[:1], torch.minimum(gaps[1:], gaps[:-1]), gaps[-1:]]) > 1e-4
    assert clear.sum() > len(clear) // 2
    for field in ("pred_classes", "pred_boxes"):
        a, b = getattr(ref, field), getattr(got, field)
        a, b = (a.tensor, b.tensor) if field == "pred_boxes" else (a, b)
        torch.testing.assert_close(b[got_order][clear], a[ref_order][clear], rtol=1e-4, atol=1e-3)


def test_encoder_ffn_inference_chunks_equal_the_whole_product(monkeypatch):
    """Eager inference runs the encoder FFN in token chunks (heap-sized hidden products); the
    result equals the one-product FFN (hand-written here), the chunk count follows the budget,
    and training keeps one product."""
    from detrex_projects.maskdino.modeling import encoder

    torch.manual_seed(0)
    layer = encoder.MSDeformAttnEncoderLayer(d_model=16, d_ffn=32).eval()
    src = torch.randn(2, 37, 16)  # 74 tokens
    expected = layer.linear2(torch.relu(layer.linear1(src))).detach()
    # 32 hidden floats per token = 128 bytes: a 2 KiB budget gives 16-token chunks (5 of them)
    monkeypatch.setattr(encoder, "_FFN_CHUNK_BYTES", 2048)
    calls = []
    layer.linear1.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape[0]))
    with torch.no_grad():
        chunked = layer._ffn(src)
    assert calls == [16, 16, 16, 16, 10]
    torch.testing.assert_close(chunked, expected, rtol=1e-6, atol=1e-6)
    calls.clear()
    layer.train()
    trained = layer._ffn(src)
    assert calls == [2] and trained.requires_grad  # one [2, 37, 32] product
    torch.testing.assert_close(trained.detach(), expected, rtol=1e-6, atol=1e-6)


def _backward_node_names(tensor: torch.Tensor) -> set[str]:
    names, stack, seen = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def test_ffn_relu_under_autograd_leaves_no_view_rebase_in_the_backward():
    """An in-place ReLU on the 3-d linear output (a view of the matrix product) makes autograd
    rebase the view: CopySlices / AsStridedBackward nodes that copy the whole hidden tensor
    several times. Under autograd both layers' FFNs stay out of place, with the same values
    and gradients as the hand-written FFN."""
    from detrex_projects.maskdino.modeling import encoder
    from detrex_projects.maskdino.modeling.decoder_layers import DeformableTransformerDecoderLayer

    torch.manual_seed(0)
    layer = encoder.MSDeformAttnEncoderLayer(d_model=16, d_ffn=32).train()
    src = torch.randn(2, 37, 16, requires_grad=True)
    out = layer._ffn(src)
    assert "ReluBackward0" in _backward_node_names(out)
    assert not {"CopySlices", "AsStridedBackward0"} & _backward_node_names(out)
    (grad,) = torch.autograd.grad(out.square().sum(), src)
    expected = layer.linear2(torch.relu(layer.linear1(src)))
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), src)
    assert torch.equal(out, expected) and torch.equal(grad, expected_grad)

    decoder_layer = DeformableTransformerDecoderLayer(
        d_model=16, d_ffn=32, n_levels=2, n_heads=2, n_points=2
    ).train()
    shapes = [(4, 5), (2, 3)]
    memory = torch.randn(2, 26, 16)
    tgt, pos = torch.randn(2, 7, 16, requires_grad=True), torch.randn(2, 7, 16)
    boxes = torch.rand(2, 7, 2, 4) * 0.5 + 0.25
    out = decoder_layer(tgt, pos, boxes, memory, shapes, None)
    names = _backward_node_names(out)
    assert "ReluBackward0" in names and not {"CopySlices", "AsStridedBackward0"} & names
