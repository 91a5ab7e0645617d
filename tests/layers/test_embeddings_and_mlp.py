import math

import pytest
import torch

from detrex_ext.layers import MLP, PositionEmbeddingSine, box_sine_embedding, get_sine_pos_embed


def _sine_channel(value: float, k: int, num_feats: int, temperature: float = 10000.0) -> float:
    t_k = temperature ** (2 * (k // 2) / num_feats)
    return math.sin(value / t_k) if k % 2 == 0 else math.cos(value / t_k)


def test_position_embedding_sine_matches_formula():
    num_feats, height, width = 8, 3, 4
    pe = PositionEmbeddingSine(num_pos_feats=num_feats, normalize=True)
    out = pe(torch.zeros(2, 5, height, width))
    assert out.shape == (2, 2 * num_feats, height, width) and out.dtype == torch.float32
    for i in range(height):
        for j in range(width):
            y = (i + 1) / (height + 1e-6) * 2 * math.pi
            x = (j + 1) / (width + 1e-6) * 2 * math.pi
            expected = [_sine_channel(y, k, num_feats) for k in range(num_feats)]
            expected += [_sine_channel(x, k, num_feats) for k in range(num_feats)]
            torch.testing.assert_close(out[1, :, i, j], torch.tensor(expected), atol=1e-5, rtol=0)


def test_position_embedding_sine_with_padding_mask_normalises_valid_region():
    pe = PositionEmbeddingSine(num_pos_feats=6)
    mask = torch.zeros(1, 5, 7, dtype=torch.bool)
    mask[:, 3:, :] = True
    mask[:, :, 4:] = True
    padded = pe(torch.zeros(1, 1, 5, 7), mask)
    unpadded = pe(torch.zeros(1, 1, 3, 4))
    torch.testing.assert_close(padded[:, :, :3, :4], unpadded)


def test_position_embedding_unnormalised_and_offset():
    pe = PositionEmbeddingSine(num_pos_feats=4, normalize=False)
    out = pe(torch.zeros(1, 1, 2, 3))
    torch.testing.assert_close(out[0, 4, 1, 2], torch.tensor(math.sin(3.0)))  # x block, k=0
    pe = PositionEmbeddingSine(num_pos_feats=4, normalize=True, offset=-0.5, scale=1.0)
    out = pe(torch.zeros(1, 1, 2, 2))
    torch.testing.assert_close(out[0, 0, 1, 0], torch.tensor(math.sin(1.5 / (2 + 1e-6))))
    with pytest.raises(ValueError, match="normalize"):
        PositionEmbeddingSine(normalize=False, scale=2.0)


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
