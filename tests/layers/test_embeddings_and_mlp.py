import math

import pytest
import torch

from detrex_ext.layers import MLP, box_sine_embedding, get_sine_pos_embed


def _sine_channel(value: float, k: int, num_feats: int, temperature: float = 10000.0) -> float:
    t_k = temperature ** (2 * (k // 2) / num_feats)
    return math.sin(value / t_k) if k % 2 == 0 else math.cos(value / t_k)


def test_box_sine_embedding_order_y_x_w_h():
    num_feats = 6
    boxes = torch.tensor([[[0.1, 0.7, 0.3, 0.05]], [[0.5, 0.2, 0.9, 1.0]]])  # [2, 1, 4] cx cy w h
    out = get_sine_pos_embed(boxes, num_pos_feats=num_feats)
    assert out.shape == (2, 1, 4 * num_feats)
    for b in range(2):
        cx, cy, w, h = boxes[b, 0].tolist()
        expected = []
        for coord in (cy, cx, w, h):
            expected += [_sine_channel(coord * 2 * math.pi, k, num_feats) for k in range(num_feats)]
        torch.testing.assert_close(out[b, 0], torch.tensor(expected), atol=1e-6, rtol=0)
    points = get_sine_pos_embed(boxes[..., :2], num_pos_feats=num_feats)
    torch.testing.assert_close(points, out[..., : 2 * num_feats])
    # decoder code calls it box_sine_embedding(reference, num_pos_feats), sequence-first
    seq_first = box_sine_embedding(boxes.transpose(0, 1), num_feats)
    torch.testing.assert_close(seq_first.transpose(0, 1), out)
    plain = get_sine_pos_embed(boxes[..., :2], num_pos_feats=num_feats, exchange_xy=False)
    torch.testing.assert_close(plain[..., :num_feats], out[..., num_feats : 2 * num_feats])


def test_mlp_structure_and_relu_between_layers():
    mlp = MLP(5, 7, 3, num_layers=3)
    assert [k for k in mlp.state_dict()] == [
        f"layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")
    ]
    assert [tuple(layer.weight.shape) for layer in mlp.layers] == [(7, 5), (7, 7), (3, 7)]
    x = torch.randn(2, 4, 5)
    h = torch.relu(mlp.layers[0](x))
    h = torch.relu(mlp.layers[1](h))
    torch.testing.assert_close(mlp(x), mlp.layers[2](h))
    assert (mlp(x) < 0).any()  # no activation after the last layer
    single = MLP(5, 99, 2, num_layers=1)
    assert tuple(single.layers[0].weight.shape) == (2, 5)
    with pytest.raises(ValueError):
        MLP(5, 5, 5, num_layers=0)
