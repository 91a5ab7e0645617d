import logging
import math
import types

import pytest
import torch

import detrex_ext.layers.multi_scale_deform_attn_op as msda_op
from detrex_ext.layers import (
    MultiScaleDeformableAttention,
    multi_scale_deformable_attn,
    multi_scale_deformable_attn_pytorch,
    set_msda_backend,
)

SHAPES = [(4, 5), (2, 3), (1, 1)]


def _level_start(shapes):
    starts, total = [], 0
    for h, w in shapes:
        starts.append(total)
        total += h * w
    return starts


def naive_msda(value, shapes, locations, weights):
    """Per-sample loop of the official CUDA kernel's bilinear interpolation (float64)."""
    batch, _, heads, head_dim = value.shape
    _, queries, _, levels, points, _ = locations.shape
    value, locations, weights = value.detach().double(), locations.detach(), weights.detach()
    out = torch.zeros(batch, queries, heads, head_dim, dtype=torch.float64)
    starts = _level_start(shapes)
    for b in range(batch):
        for q in range(queries):
            for h in range(heads):
                for lvl, (height, width) in enumerate(shapes):
                    level_map = value[b, starts[lvl] : starts[lvl] + height * width, h]
                    level_map = level_map.view(height, width, head_dim)
                    for p in range(points):
                        x = float(locations[b, q, h, lvl, p, 0]) * width - 0.5
                        y = float(locations[b, q, h, lvl, p, 1]) * height - 0.5
                        if not (y > -1 and x > -1 and y < height and x < width):
                            continue
                        y0, x0 = math.floor(y), math.floor(x)
                        ly, lx = y - y0, x - x0
                        sample = torch.zeros(head_dim, dtype=torch.float64)
                        for yy, xx, wgt in (
                            (y0, x0, (1 - ly) * (1 - lx)),
                            (y0, x0 + 1, (1 - ly) * lx),
                            (y0 + 1, x0, ly * (1 - lx)),
                            (y0 + 1, x0 + 1, ly * lx),
                        ):
                            if 0 <= yy < height and 0 <= xx < width:
                                sample += wgt * level_map[yy, xx]
                        out[b, q, h] += float(weights[b, q, h, lvl, p]) * sample
    return out.flatten(2)


def _inputs(batch=2, queries=5, heads=2, head_dim=4, points=3, shapes=SHAPES, dtype=torch.float64):
    num_tokens = sum(h * w for h, w in shapes)
    value = torch.randn(batch, num_tokens, heads, head_dim, dtype=dtype)
    # [-0.25, 1.25]: a good share of the points fall outside the map or in its border band.
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, dtype=dtype) * 1.5 - 0.25
    weights = torch.rand(batch, queries, heads, len(shapes), points, dtype=dtype)
    return value, locations, weights


def _with_border_points(locations, shapes):
    """Put exact border / pixel-centre / just-outside locations into the first query."""
    locations = locations.clone()
    for lvl, (height, width) in enumerate(shapes):
        specials = [
            (0.0, 0.0),  # top-left corner of the map: pixel (-0.5, -0.5)
            (1.0, 1.0),  # bottom-right corner: pixel (W - 0.5, H - 0.5)
            (0.5 / width, 0.5 / height),  # centre of pixel (0, 0)
            (-0.4 / width, 1.3 / height),  # x pixel -0.9: only the right corner is inside
            (1.0 + 0.4 / width, 0.5),  # x pixel W - 0.1: only the left corner is inside
            (-1.1 / width, 0.5),  # entirely outside on the left
        ]
        for p, (x, y) in enumerate(specials[: locations.shape[4]]):
            locations[0, 0, 0, lvl, p] = torch.tensor([x, y], dtype=locations.dtype)
        for p, (x, y) in enumerate(specials[3:][: locations.shape[4]]):
            locations[1, 0, 1, lvl, p] = torch.tensor([x, y], dtype=locations.dtype)
    return locations


@pytest.mark.parametrize("backend", ["pytorch", "gather"])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_forward_matches_naive_loop_including_borders(as_tensor, backend, restore_backend):
    value, locations, weights = _inputs()
    locations = _with_border_points(locations, SHAPES)
    shapes = torch.tensor(SHAPES) if as_tensor else SHAPES
    start = torch.tensor(_level_start(SHAPES)) if as_tensor else None
    set_msda_backend(backend)
    out = multi_scale_deformable_attn(value, shapes, start, locations, weights)
    assert out.shape == (2, 5, 8) and out.dtype == torch.float64
    torch.testing.assert_close(out, naive_msda(value, SHAPES, locations, weights))
    # some samples are really outside, so zero padding is exercised
    assert ((locations < 0) | (locations > 1)).any()


def test_pytorch_reference_function_agrees_with_op():
    value, locations, weights = _inputs(dtype=torch.float32)
    ref = multi_scale_deformable_attn_pytorch(value, SHAPES, locations, weights)
    out = multi_scale_deformable_attn(value, SHAPES, None, locations, weights)
    torch.testing.assert_close(out, ref)


def test_gradcheck_float64():
    value, locations, weights = _inputs(batch=1, queries=3, head_dim=2, points=2)
    locations = locations.clamp(-0.2, 1.2)
    inputs = [t.clone().requires_grad_(True) for t in (value, locations, weights)]

    def fn(v, loc, w):
        return multi_scale_deformable_attn(v, SHAPES, None, loc, w)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


def test_gradients_match_autograd_through_grid_sample():
    value, locations, weights = _inputs(dtype=torch.float32)
    leaves_a = [t.clone().requires_grad_(True) for t in (value, locations, weights)]
    leaves_b = [t.clone().requires_grad_(True) for t in (value, locations, weights)]
    grad = torch.randn(2, 5, 8)
    multi_scale_deformable_attn(leaves_a[0], SHAPES, None, leaves_a[1], leaves_a[2]).backward(grad)
    multi_scale_deformable_attn_pytorch(leaves_b[0], SHAPES, leaves_b[1], leaves_b[2]).backward(
        grad
    )
    for a, b in zip(leaves_a, leaves_b):
        torch.testing.assert_close(a.grad, b.grad)


def test_bf16_value_within_tolerance_and_dtypes():
    value, locations, weights = _inputs(
        batch=2, queries=16, heads=2, head_dim=8, dtype=torch.float32
    )
    leaves = [value.bfloat16().requires_grad_(True), locations.requires_grad_(True), weights]
    out = multi_scale_deformable_attn(leaves[0], SHAPES, None, leaves[1], leaves[2])
    assert out.dtype == torch.bfloat16
    ref = multi_scale_deformable_attn(value.bfloat16().float(), SHAPES, None, locations, weights)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    out.float().sum().backward()
    assert leaves[0].grad.dtype == torch.bfloat16
    assert leaves[1].grad.dtype == torch.float32


def test_runs_under_cpu_autocast():
    module = MultiScaleDeformableAttention(embed_dim=16, num_heads=2, num_levels=3, num_points=2)
    query, refs, memory = torch.randn(1, 6, 16), torch.rand(1, 6, 3, 2), torch.randn(1, 27, 16)
    expected = module(query, refs, memory, SHAPES)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(query, refs, memory, SHAPES)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=5e-2, atol=5e-2)


def test_opcheck_and_custom_op_registration():
    value, locations, weights = _inputs(batch=1, queries=2, dtype=torch.float32)
    shapes = torch.tensor(SHAPES)
    start = torch.tensor(_level_start(SHAPES))
    args = (value.requires_grad_(), shapes, start, locations.requires_grad_(), weights, None)
    torch.library.opcheck(torch.ops.detrex_ext.ms_deform_attn.default, args)
    hinted = args[:-1] + ([s for hw in SHAPES for s in hw],)
    torch.library.opcheck(torch.ops.detrex_ext.ms_deform_attn.default, hinted)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_torch_compile_fullgraph_forward_and_backward(as_tensor):
    module = MultiScaleDeformableAttention(embed_dim=16, num_heads=2, num_levels=3, num_points=2)
    shapes = torch.tensor(SHAPES) if as_tensor else SHAPES
    query, refs, memory = torch.randn(2, 6, 16), torch.rand(2, 6, 3, 4), torch.randn(2, 27, 16)

    def run(fn):
        module.zero_grad()
        out = fn(query, refs, memory, shapes)
        out.square().sum().backward()
        return out.detach(), module.value_proj.weight.grad.clone()

    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    out_eager, grad_eager = run(module)
    out_compiled, grad_compiled = run(compiled)
    torch.testing.assert_close(out_compiled, out_eager)
    torch.testing.assert_close(grad_compiled, grad_eager)


def test_torch_export_contains_custom_op():
    module = MultiScaleDeformableAttention(embed_dim=16, num_heads=2, num_levels=3, num_points=2)

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = module

        def forward(self, query, refs, memory):
            return self.attn(query, refs, memory, SHAPES)

    args = (torch.randn(1, 6, 16), torch.rand(1, 6, 3, 2), torch.randn(1, 27, 16))
    exported = torch.export.export(Wrapper(), args)
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert "detrex_ext.ms_deform_attn.default" in targets
    torch.testing.assert_close(exported.module()(*args), module(*args, SHAPES))


def test_module_matches_manual_computation_with_padding_mask():
    torch.manual_seed(1)
    module = MultiScaleDeformableAttention(embed_dim=8, num_heads=2, num_levels=3, num_points=2)
    for param in module.parameters():
        torch.nn.init.normal_(param, std=0.5)
    query, memory = torch.randn(2, 4, 8), torch.randn(2, 27, 8)
    refs = torch.rand(2, 4, 3, 2)
    padding = torch.rand(2, 27) < 0.3
    out = module(query, refs, memory, SHAPES, torch.tensor(_level_start(SHAPES)), padding)

    value = module.value_proj(memory).masked_fill(padding[..., None], 0).view(2, 27, 2, 4)
    offsets = module.sampling_offsets(query).view(2, 4, 2, 3, 2, 2)
    weights = module.attention_weights(query).view(2, 4, 2, 6).softmax(-1).view(2, 4, 2, 3, 2)
    wh = torch.tensor([[w, h] for h, w in SHAPES], dtype=torch.float32)
    locations = refs[:, :, None, :, None, :] + offsets / wh[None, None, None, :, None, :]
    expected = module.output_proj(naive_msda(value, SHAPES, locations, weights).float())
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    # padded tokens carry no information: changing them does not change the output
    memory2 = memory.masked_fill(padding[..., None], 123.0)
    torch.testing.assert_close(module(query, refs, memory2, SHAPES, None, padding), out)


def test_module_box_reference_locations():
    torch.manual_seed(2)
    module = MultiScaleDeformableAttention(embed_dim=8, num_heads=2, num_levels=3, num_points=2)
    torch.nn.init.normal_(module.sampling_offsets.weight)
    query, memory = torch.randn(1, 3, 8), torch.randn(1, 27, 8)
    boxes = torch.rand(1, 3, 3, 4) * 0.5 + 0.25
    out = module(query, boxes, memory, SHAPES)
    value = module.value_proj(memory).view(1, 27, 2, 4)
    offsets = module.sampling_offsets(query).view(1, 3, 2, 3, 2, 2)
    weights = module.attention_weights(query).view(1, 3, 2, 6).softmax(-1).view(1, 3, 2, 3, 2)
    # offsets are in units of box size / (2 * num_points)
    locations = boxes[:, :, None, :, None, :2] + offsets * boxes[:, :, None, :, None, 2:] / 4
    expected = module.output_proj(naive_msda(value, SHAPES, locations, weights).float())
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="end in 2"):
        module(query, boxes[..., :3], memory, SHAPES)


def test_official_initialisation():
    module = MultiScaleDeformableAttention(embed_dim=256, num_heads=8, num_levels=4, num_points=4)
    assert dict((k, tuple(v.shape)) for k, v in module.state_dict().items()) == {
        "sampling_offsets.weight": (256, 256),
        "sampling_offsets.bias": (256,),
        "attention_weights.weight": (128, 256),
        "attention_weights.bias": (128,),
        "value_proj.weight": (256, 256),
        "value_proj.bias": (256,),
        "output_proj.weight": (256, 256),
        "output_proj.bias": (256,),
    }
    assert (module.sampling_offsets.weight == 0).all()
    assert (module.attention_weights.weight == 0).all() and (
        module.attention_weights.bias == 0
    ).all()
    assert (module.value_proj.bias == 0).all() and (module.output_proj.bias == 0).all()
    bias = module.sampling_offsets.bias.view(8, 4, 4, 2)  # [head, level, point, xy]
    unit = torch.tensor([[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1]])
    for point in range(4):
        for level in range(4):
            torch.testing.assert_close(
                bias[:, level, point], unit.float() * (point + 1), atol=1e-5, rtol=0
            )


def test_shape_errors_are_clear():
    value, locations, weights = _inputs(dtype=torch.float32)
    with pytest.raises(ValueError, match="tokens but spatial_shapes"):
        multi_scale_deformable_attn(value, [(4, 5), (2, 3), (1, 2)], None, locations, weights)
    with pytest.raises(ValueError, match="attention_weights must be"):
        multi_scale_deformable_attn(value, SHAPES, None, locations, weights[..., :1])
    with pytest.raises(ValueError, match="num_heads"):
        MultiScaleDeformableAttention(embed_dim=10, num_heads=3)


@pytest.fixture
def restore_backend():
    msda_op._logged_paths.clear()
    yield
    set_msda_backend(None)
    msda_op._logged_paths.clear()


def test_backend_selection_env_override_and_log(monkeypatch, caplog, restore_backend):
    value, locations, weights = _inputs(batch=1, queries=2, dtype=torch.float32)
    calls = []

    def fake_forward(v, shapes, start, loc, attn):
        calls.append((shapes.tolist(), start.tolist()))
        return torch.full((v.shape[0], loc.shape[1], v.shape[2] * v.shape[3]), 7.0)

    fake = types.SimpleNamespace(msda_forward=fake_forward, is_available=lambda: True)
    monkeypatch.setattr(msda_op, "_triton_module", lambda: fake)

    # auto: CPU tensors stay on PyTorch paths even when Triton is available: grid_sample for
    # heads of few channels (4 here), gather from 32 channels per head
    monkeypatch.setenv("DETREX_MSDA_BACKEND", "auto")
    with caplog.at_level(logging.INFO, logger=msda_op.__name__):
        out = multi_scale_deformable_attn(value, SHAPES, None, locations, weights)
    assert not calls and not torch.all(out == 7.0)
    assert "using the PyTorch grid_sample implementation" in caplog.text
    wide = _inputs(batch=1, queries=2, head_dim=32, dtype=torch.float32)
    with caplog.at_level(logging.INFO, logger=msda_op.__name__):
        out = multi_scale_deformable_attn(wide[0], SHAPES, None, wide[1], wide[2])
    assert not calls and "using the PyTorch gather implementation" in caplog.text
    caplog.clear()
    monkeypatch.setenv("DETREX_MSDA_BACKEND", "gather")
    with caplog.at_level(logging.INFO, logger=msda_op.__name__):
        multi_scale_deformable_attn(value, SHAPES, None, locations, weights)
    assert "using the PyTorch gather implementation" in caplog.text

    # forcing triton (env var) routes through the backend with int64 shapes / start index
    monkeypatch.setenv("DETREX_MSDA_BACKEND", "triton")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=msda_op.__name__):
        out = multi_scale_deformable_attn(value, SHAPES, None, locations, weights)
        multi_scale_deformable_attn(value, SHAPES, None, locations, weights)
    assert torch.all(out == 7.0)
    assert calls[0] == ([list(s) for s in SHAPES], _level_start(SHAPES))
    assert caplog.text.count("using the Triton implementation") == 1  # logged once

    # set_msda_backend beats the environment variable
    set_msda_backend("pytorch")
    out = multi_scale_deformable_attn(value, SHAPES, None, locations, weights)
    assert not torch.all(out == 7.0) and len(calls) == 2


def test_backend_errors(monkeypatch, restore_backend):
    value, locations, weights = _inputs(batch=1, queries=2, dtype=torch.float32)
    with pytest.raises(ValueError, match="Unknown deformable-attention backend 'cuda'"):
        set_msda_backend("cuda")
    monkeypatch.setenv("DETREX_MSDA_BACKEND", "fast")
    with pytest.raises(ValueError, match="DETREX_MSDA_BACKEND"):
        multi_scale_deformable_attn(value, SHAPES, None, locations, weights)
    monkeypatch.setattr(msda_op, "_triton_module", lambda: None)
    set_msda_backend("triton")
    with pytest.raises(RuntimeError, match="not available"):
        multi_scale_deformable_attn(value, SHAPES, None, locations, weights)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_auto_backend_matches_pytorch_path(dtype, restore_backend):
    value, locations, weights = _inputs(
        batch=2, queries=64, heads=4, head_dim=32, points=4, dtype=torch.float32
    )
    value = value.to("cuda", dtype)
    locations, weights = locations.cuda(), weights.cuda()
    grad = torch.randn(2, 64, 128, device="cuda", dtype=dtype)
    results = {}
    for backend in ("pytorch", "auto"):
        set_msda_backend(backend)
        leaves = [t.clone().requires_grad_(True) for t in (value, locations, weights)]
        out = multi_scale_deformable_attn(leaves[0], SHAPES, None, leaves[1], leaves[2])
        out.backward(grad)
        results[backend] = [out.float()] + [leaf.grad.float() for leaf in leaves]
    tol = 1e-3 if dtype == torch.float32 else 3e-2
    for ref, got in zip(results["pytorch"], results["auto"]):
        torch.testing.assert_close(got, ref, rtol=tol, atol=tol)


# ---------------------------------------------------------------- the CPU gather backend


def _grads(backend, value, locations, weights, grad):
    set_msda_backend(backend)
    leaves = [t.clone().requires_grad_(True) for t in (value, locations, weights)]
    out = multi_scale_deformable_attn(leaves[0], SHAPES, None, leaves[1], leaves[2])
    out.backward(grad)
    return [out] + [leaf.grad for leaf in leaves]


def test_gather_backend_equals_grid_sample_path_in_float64(restore_backend):
    """Output and all three gradients of the gather formulation equal the grid_sample path's
    (float64: only rounding differs), with points inside, on the border band and outside."""
    value, locations, weights = _inputs(batch=2, queries=7, heads=2, head_dim=3, points=4)
    grad = torch.randn(2, 7, 6, dtype=torch.float64)
    reference = _grads("pytorch", value, locations, weights, grad)
    gathered = _grads("gather", value, locations, weights, grad)
    for name, got, ref in zip(("output", "value", "locations", "weights"), gathered, reference):
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12, msg=name)
    # exact border / pixel-centre points too (coordinates are rounded as grid_sample rounds
    # them, so even the one-sided location gradient at an integer pixel coordinate agrees)
    locations = _with_border_points(locations, SHAPES)
    reference = _grads("pytorch", value, locations, weights, grad)
    gathered = _grads("gather", value, locations, weights, grad)
    for name, got, ref in zip(("output", "value", "locations", "weights"), gathered, reference):
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12, msg=name)
    # points far outside get no location gradient (their samples read zeros only)
    far = torch.full_like(locations, 3.0)
    outside = _grads("gather", value, far, weights, grad)
    assert not outside[0].any() and not outside[2].any() and not outside[1].any()


def test_gather_backend_float32_within_rounding_of_grid_sample(restore_backend):
    """fp32: the output and value/weight gradients agree with the grid_sample path to rounding
    (sums of at most L * P * 4 products of O(1) values)."""
    value, locations, weights = _inputs(
        batch=2, queries=16, heads=2, head_dim=8, points=4, dtype=torch.float32
    )
    grad = torch.randn(2, 16, 16)
    reference = _grads("pytorch", value, locations, weights, grad)
    gathered = _grads("gather", value, locations, weights, grad)
    for got, ref in zip(gathered[:2] + gathered[3:], reference[:2] + reference[3:]):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_gather_backend_non_finite_locations_read_zeros(restore_backend):
    """NaN / inf locations fail the official kernel's bounds test and contribute nothing (the
    grid_sample path returns NaN there); the other samples are unaffected."""
    value, locations, weights = _inputs(batch=1, queries=3, dtype=torch.float32)
    locations[0, 1, 0, 0, 0] = torch.tensor([float("nan"), 0.5])
    locations[0, 2, 1, 1, 1] = torch.tensor([0.5, float("inf")])
    set_msda_backend("gather")
    out = multi_scale_deformable_attn(value, SHAPES, None, locations, weights)
    clean_weights = weights.clone()
    clean_weights[0, 1, 0, 0, 0] = 0.0
    clean_weights[0, 2, 1, 1, 1] = 0.0
    clean_locations = locations.nan_to_num(nan=0.5, posinf=0.5)
    expected = naive_msda(value, SHAPES, clean_locations, clean_weights).float()
    torch.testing.assert_close(out, expected)


def test_gather_backend_int64_rows_give_the_same_result(monkeypatch, restore_backend):
    """Inputs too large for int32 row indices switch to int64 (forced here by a tiny limit)."""
    from detrex_ext.layers import ms_deform_attn_gather

    value, locations, weights = _inputs(batch=2, queries=4)
    grad = torch.randn(2, 4, 8, dtype=torch.float64)
    small = _grads("gather", value, locations, weights, grad)
    monkeypatch.setattr(ms_deform_attn_gather, "_INT32_LIMIT", 10)
    rows = ms_deform_attn_gather._samples(locations, SHAPES, 2, torch.float64).rows
    assert rows.dtype == torch.int64
    large = _grads("gather", value, locations, weights, grad)
    for a, b in zip(small, large):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_gather_backend_chunked_dots_cover_every_bag(monkeypatch, restore_backend):
    """The backward's corner dot products run in chunks of bags; a chunk size that does not
    divide the bag count gives the same gradients."""
    from detrex_ext.layers import ms_deform_attn_gather

    value, locations, weights = _inputs(batch=2, queries=5)
    grad = torch.randn(2, 5, 8, dtype=torch.float64)
    whole = _grads("gather", value, locations, weights, grad)
    monkeypatch.setattr(ms_deform_attn_gather, "_DOT_CHUNK", 3)  # 2 * 5 * 2 = 20 bags
    chunked = _grads("gather", value, locations, weights, grad)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
