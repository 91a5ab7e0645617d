"""tools/analyze_model.py: parameter table, fvcore FLOPs with our deformable-attention rule."""

from __future__ import annotations

import warnings

import pytest
import torch
from tool_helpers import TINY_CONFIG, load_tool

from detrex_ext.layers import multi_scale_deformable_attn

analyze_model = load_tool("analyze_model")


class _DeformableSampling(torch.nn.Module):
    def forward(self, value, locations, weights):
        shapes = torch.tensor([[4, 6], [2, 3]])
        level_start = torch.tensor([0, 24])
        return multi_scale_deformable_attn(value, shapes, level_start, locations, weights)


def test_msda_flops_follow_the_documented_rule():
    from fvcore.nn import FlopCountAnalysis

    batch, queries, heads, levels, points, head_dim = 2, 5, 2, 2, 3, 4
    inputs = (
        torch.rand(batch, 30, heads, head_dim),
        torch.rand(batch, queries, heads, levels, points, 2),
        torch.rand(batch, queries, heads, levels, points),
    )
    analysis = FlopCountAnalysis(_DeformableSampling(), inputs)
    analysis.set_op_handle(analyze_model.MSDA_OP, analyze_model.msda_flop_handle)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        total = analysis.total()
    assert total == 5 * batch * queries * heads * levels * points * head_dim
    assert not analysis.unsupported_ops()


def test_cli_reports_parameters_and_flops(capsys):
    argv = ["--config-file", str(TINY_CONFIG), "--height", "64", "--width", "96", "--device", "cpu"]
    assert analyze_model.main(argv) == 0
    printed = capsys.readouterr().out
    assert "parameters: 4 (4 trainable)" in printed
    # the 1x1 convolution: 3 multiply-adds per output pixel at 64 x 96 (no resize: fixed size)
    assert "| pixel_scorer |             4 | 18.432K  |" in printed


@pytest.mark.parametrize("value", [torch.ones(2), {"b": torch.ones(1), "a": [torch.zeros(3)]}])
def test_flatten_tensors_orders_dict_keys(value):
    flat = analyze_model.flatten_tensors(value)
    if isinstance(value, dict):
        assert [t.shape[0] for t in flat] == [3, 1]  # "a" before "b"
    else:
        assert len(flat) == 1 and flat[0] is value


def test_cli_input_images_are_resized_as_for_testing(tmp_path, capsys):
    from PIL import Image
    from tool_helpers import half_bright_image

    Image.fromarray(half_bright_image(48, 96)).save(tmp_path / "a.png")
    argv = [
        "--config-file",
        str(TINY_CONFIG),
        "--tasks",
        "flop",
        "--input",
        str(tmp_path / "a.png"),
    ]
    assert analyze_model.main(argv) == 0
    printed = capsys.readouterr().out
    assert "model input (32, 64)" in printed  # ResizeShortestEdge(32, max 64) of 48 x 96
    assert "| pixel_scorer |             4 | 6.144K   |" in printed
