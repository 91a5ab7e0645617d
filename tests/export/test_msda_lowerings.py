"""The two export lowerings of deformable attention compute the op's formula (a per-sample
float64 loop), inside and outside the maps, and replace the op in exported programs."""

from __future__ import annotations

import math

import pytest
import torch

from detrex_ext.export.msda import msda_decomposition_table, msda_gather, msda_grid_sample
from detrex_ext.layers import MultiScaleDeformableAttention, multi_scale_deformable_attn

SHAPES = [(5, 7), (3, 4), (2, 2), (1, 1)]
LOWERINGS = {"grid_sample": msda_grid_sample, "gather": msda_gather}


def bilinear_reference(value, shapes, locations, weights):
    """out[b, q, h*Dh + d] = sum_{l, p} w * bilinear(V_l, loc * size - 0.5), zero outside."""
    batch, _, heads, head_dim = value.shape
    _, queries, _, levels, points, _ = locations.shape
    out = torch.zeros(batch, queries, heads, head_dim, dtype=torch.float64)
    start = 0
    for level, (height, width) in enumerate(shapes):
        level_map = value[:, start : start + height * width].double()
        level_map = level_map.view(batch, height, width, heads, head_dim)
        start += height * width
        for b in range(batch):
            for q in range(queries):
                for h in range(heads):
                    for p in range(points):
                        x = float(locations[b, q, h, level, p, 0]) * width - 0.5
                        y = float(locations[b, q, h, level, p, 1]) * height - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        for yy, xx, wgt in (
                            (y0, x0, (1 - (y - y0)) * (1 - (x - x0))),
                            (y0, x0 + 1, (1 - (y - y0)) * (x - x0)),
                            (y0 + 1, x0, (y - y0) * (1 - (x - x0))),
                            (y0 + 1, x0 + 1, (y - y0) * (x - x0)),
                        ):
                            if 0 <= yy < height and 0 <= xx < width:
                                attention = float(weights[b, q, h, level, p])
                                out[b, q, h] += attention * wgt * level_map[b, yy, xx, h]
    return out.flatten(2)


def _inputs(seed=0, batch=2, queries=6, heads=3, head_dim=4, points=3):
    g = torch.Generator().manual_seed(seed)
    tokens = sum(h * w for h, w in SHAPES)
    value = torch.randn(batch, tokens, heads, head_dim, generator=g)
    # locations from -0.4 to 1.4: inside, on the border and well outside every map
    locations = torch.rand(batch, queries, heads, len(SHAPES), points, 2, generator=g) * 1.8 - 0.4
    weights = torch.rand(batch, queries, heads, len(SHAPES), points, generator=g)
    return value, locations, weights


def _hint(shapes):
    return [side for hw in shapes for side in hw]


@pytest.mark.parametrize("lowering", list(LOWERINGS))
def test_lowering_computes_the_bilinear_formula(lowering):
    value, locations, weights = _inputs()
    expected = bilinear_reference(value, SHAPES, locations, weights)
    out = LOWERINGS[lowering](value, None, None, locations, weights, _hint(SHAPES))
    assert out.shape == expected.shape and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("lowering", list(LOWERINGS))
def test_lowering_equals_the_op(lowering):
    value, locations, weights = _inputs(seed=1)
    op = multi_scale_deformable_attn(value, SHAPES, None, locations, weights)
    out = LOWERINGS[lowering](value, None, None, locations, weights, _hint(SHAPES))
    torch.testing.assert_close(out, op, atol=2e-6, rtol=1e-5)


def test_lowerings_need_python_level_sizes():
    value, locations, weights = _inputs()
    with pytest.raises(ValueError, match="level sizes as Python ints"):
        msda_gather(value, None, None, locations, weights, None)


def test_unknown_lowering_is_refused():
    with pytest.raises(ValueError, match="grid_sample, gather"):
        msda_decomposition_table("bilinear")


class _Attention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = MultiScaleDeformableAttention(embed_dim=8, num_heads=2, num_levels=4)

    def forward(self, query, reference, value):
        return self.attn(query, reference, value, SHAPES)


@pytest.mark.parametrize("lowering", list(LOWERINGS))
def test_exported_program_has_the_lowering_instead_of_the_op(lowering):
    torch.manual_seed(0)
    module = _Attention().eval()
    tokens = sum(h * w for h, w in SHAPES)
    args = (torch.randn(2, 5, 8), torch.rand(2, 5, 4, 2), torch.randn(2, tokens, 8))
    program = torch.export.export(module, args, strict=False)
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert any("ms_deform_attn" in t for t in targets)
    lowered = program.run_decompositions(msda_decomposition_table(lowering))
    targets = {str(n.target) for n in lowered.graph.nodes if n.op == "call_function"}
    assert not any("ms_deform_attn" in t for t in targets)
    assert any("grid_sampler" in t for t in targets) == (lowering == "grid_sample")
    with torch.no_grad():
        torch.testing.assert_close(lowered.module()(*args), module(*args), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("lowering", list(LOWERINGS))
def test_call_site_swap_traces_the_lowering_and_restores_the_op(lowering):
    from detrex_ext.export.msda import lowered_deformable_attention
    from detrex_ext.layers import multi_scale_deform_attn as call_site

    torch.manual_seed(0)
    module = _Attention().eval()
    tokens = sum(h * w for h, w in SHAPES)
    args = (torch.randn(2, 5, 8), torch.rand(2, 5, 4, 2), torch.randn(2, tokens, 8))
    with lowered_deformable_attention(lowering):
        program = torch.export.export(module, args, strict=False)
    assert call_site.multi_scale_deformable_attn is multi_scale_deformable_attn
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not any("ms_deform_attn" in t for t in targets)
    assert any("grid_sampler" in t for t in targets) == (lowering == "grid_sample")
    with torch.no_grad():
        torch.testing.assert_close(program.module()(*args), module(*args), atol=2e-6, rtol=1e-5)
