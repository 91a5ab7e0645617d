"""detrex's layer names: PositionEmbeddingSine (mask only) and PositionEmbeddingLearned, FFN,
MultiheadAttention, BaseTransformerLayer, TransformerLayerSequence; detectron2's diou/ciou
losses. Expectations are computed by hand or composed from the parts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from detrex_ext.layers import (
    FFN,
    BaseTransformerLayer,
    MultiheadAttention,
    PositionEmbeddingLearned,
    PositionEmbeddingSine,
    TransformerLayerSequence,
    ciou_loss,
    diou_loss,
)


def test_position_embedding_sine_takes_the_mask_with_detrex_defaults():
    pe = PositionEmbeddingSine()  # 64 features per axis, not normalised
    assert (pe.num_pos_feats, pe.normalize, pe.scale) == (64, False, 2 * math.pi)
    mask = torch.zeros(1, 2, 3, dtype=torch.bool)
    mask[0, :, 2] = True  # the last column is padding
    out = pe(mask)
    assert out.shape == (1, 128, 2, 3)
    # pixel (1, 1): y = 2, x = 2 (1-based cumulative counts); channel 0 is sin(y), 1 cos(y)
    assert out[0, 0, 1, 1].item() == pytest.approx(math.sin(2.0))
    assert out[0, 1, 1, 1].item() == pytest.approx(math.cos(2.0))
    assert out[0, 64, 1, 1].item() == pytest.approx(math.sin(2.0))
    normalised = PositionEmbeddingSine(num_pos_feats=2, normalize=True, offset=-0.5)(mask)
    # x of column 1: (2 - 0.5) / (2 valid columns + 1e-6) * 2 pi
    assert normalised[0, 2, 0, 1].item() == pytest.approx(math.sin(1.5 / (2 + 1e-6) * 2 * math.pi))


def test_position_embedding_learned_concatenates_column_then_row():
    pe = PositionEmbeddingLearned(num_pos_feats=3, row_num_embed=4, col_num_embed=5)
    out = pe(torch.zeros(2, 4, 5, dtype=torch.bool))
    assert out.shape == (2, 6, 4, 5)
    for i, j in [(0, 0), (3, 4), (2, 1)]:
        expected = torch.cat([pe.col_embed.weight[j], pe.row_embed.weight[i]])
        assert torch.equal(out[1, :, i, j], expected)
    assert ((pe.row_embed.weight >= 0) & (pe.row_embed.weight < 1)).all()  # uniform init
    with pytest.raises(ValueError, match="row_num_embed >= 6"):
        pe(torch.zeros(1, 6, 5, dtype=torch.bool))


def _ffn_with_known_weights(add_identity: bool = True) -> FFN:
    ffn = FFN(embed_dim=2, feedforward_dim=3, add_identity=add_identity)
    first, second = ffn.layers[0][0], ffn.layers[1]
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
        first.bias.copy_(torch.tensor([0.0, -1.0, 0.0]))
        second.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, 0.0]]))
        second.bias.copy_(torch.tensor([0.5, 0.0]))
    return ffn


def test_ffn_by_hand():
    x = torch.tensor([[2.0, 3.0]])
    # hidden = relu([2, 3 - 1, 2 - 3]) = [2, 2, 0]; out = [2 + 2 + 0 + 0.5, 4] = [4.5, 4]
    assert _ffn_with_known_weights(add_identity=False)(x).tolist() == [[4.5, 4.0]]
    assert _ffn_with_known_weights()(x).tolist() == [[6.5, 7.0]]  # + x
    identity = torch.tensor([[10.0, 20.0]])
    assert _ffn_with_known_weights()(x, identity).tolist() == [[14.5, 24.0]]
    three = FFN(embed_dim=4, feedforward_dim=8, output_dim=5, num_fcs=3, add_identity=False)
    assert sum(p.numel() for p in three.parameters()) == (4 * 8 + 8) + (8 * 8 + 8) + (8 * 5 + 5)
    assert three(torch.zeros(7, 4)).shape == (7, 5)
    with pytest.raises(ValueError, match="num_fcs >= 2"):
        FFN(num_fcs=1)


def test_multihead_attention_adds_positions_and_identity():
    torch.manual_seed(0)
    attn = MultiheadAttention(embed_dim=8, num_heads=2, batch_first=True).eval()
    query, key, value = torch.randn(2, 3, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    query_pos, key_pos = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    padding = torch.zeros(2, 5, dtype=torch.bool)
    padding[1, 3:] = True
    out = attn(query, key, value, query_pos=query_pos, key_pos=key_pos, key_padding_mask=padding)
    reference = attn.attn(query + query_pos, key + key_pos, value, key_padding_mask=padding)[0]
    torch.testing.assert_close(out, query + reference)
    # self-attention: key = value = query, key_pos defaults to query_pos (same shape)
    self_out = attn(query, query_pos=query_pos, identity=torch.zeros_like(query))
    torch.testing.assert_close(self_out, attn.attn(query + query_pos, query + query_pos, query)[0])


def _layer(order):
    torch.manual_seed(1)
    return BaseTransformerLayer(
        attn=MultiheadAttention(embed_dim=4, num_heads=2),
        ffn=FFN(embed_dim=4, feedforward_dim=6),
        norm=nn.LayerNorm(4),
        operation_order=order,
    ).eval()


def test_base_transformer_layer_post_norm_is_the_composition_of_its_parts():
    layer = _layer(("self_attn", "norm", "cross_attn", "norm", "ffn", "norm"))
    assert (len(layer.attentions), len(layer.ffns), len(layer.norms)) == (2, 1, 3)
    assert layer.attentions[0] is not layer.attentions[1]  # deep copies
    assert not layer.pre_norm and layer.embed_dim == 4
    query, memory, pos = torch.randn(3, 2, 4), torch.randn(5, 2, 4), torch.randn(3, 2, 4)
    with pytest.warns(UserWarning, match="position encoding of key is missing"):
        out = layer(query, memory, memory, query_pos=pos)  # no key_pos for the cross-attention
    x = layer.norms[0](layer.attentions[0](query, query, query, query_pos=pos, key_pos=pos))
    with pytest.warns(UserWarning):
        x = layer.norms[1](layer.attentions[1](x, memory, memory, query_pos=pos))
    x = layer.norms[2](layer.ffns[0](x))
    torch.testing.assert_close(out, x)


def test_base_transformer_layer_pre_norm_keeps_the_unnormed_identity():
    layer = _layer(("norm", "self_attn", "norm", "ffn"))
    assert layer.pre_norm
    query = torch.randn(3, 2, 4)
    out = layer(query)
    x = layer.attentions[0](layer.norms[0](query), identity=query)
    x = layer.ffns[0](layer.norms[1](x), x)
    torch.testing.assert_close(out, x)
    with pytest.raises(ValueError, match="2 attn_masks given for 1 attentions"):
        layer(query, attn_masks=[None, None])
    with pytest.raises(ValueError, match="operation_order"):
        _layer(("self_attn", "mlp"))
    with pytest.raises(ValueError, match="2 attention modules given for the 1"):
        BaseTransformerLayer([nn.Identity(), nn.Identity()], nn.Identity(), nn.Identity(),
                             ("self_attn", "ffn"))  # fmt: skip


def test_transformer_layer_sequence_copies_or_keeps_layers():
    layer = nn.Linear(2, 2)
    stack = TransformerLayerSequence(layer, num_layers=3)
    assert len(stack.layers) == 3 and stack.layers[0] is not stack.layers[1]
    assert torch.equal(stack.layers[2].weight, layer.weight)
    given = [nn.Linear(2, 2), nn.Linear(2, 3)]
    kept = TransformerLayerSequence(given, num_layers=2)
    assert list(kept.layers) == given and kept.num_layers == 2
    with pytest.raises(NotImplementedError):
        kept()
    with pytest.raises(ValueError, match="num_layers=3"):
        TransformerLayerSequence(given, num_layers=3)


def test_diou_and_ciou_by_hand():
    same = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    assert diou_loss(same, same).item() == pytest.approx(0.0, abs=1e-6)
    assert ciou_loss(same, same).item() == pytest.approx(0.0, abs=1e-6)
    # shifted by 1: IoU = 2 / 6, centres 1 apart, enclosing box 3 x 2 (diagonal^2 = 13)
    shifted = torch.tensor([[1.0, 0.0, 3.0, 2.0]])
    assert diou_loss(same, shifted).item() == pytest.approx(1 - 1 / 3 + 1 / 13, rel=1e-5)
    assert ciou_loss(same, shifted).item() == pytest.approx(1 - 1 / 3 + 1 / 13, rel=1e-5)
    # 2 x 1 against 1 x 2 at the origin: IoU 1/3, centre distance^2 0.5, diagonal^2 8;
    # v = 4 / pi^2 (atan(1/2) - atan(2))^2, alpha = v / (1 - 1/3 + v)
    wide, tall = torch.tensor([0.0, 0.0, 2.0, 1.0]), torch.tensor([0.0, 0.0, 1.0, 2.0])
    diou = 1 - 1 / 3 + 0.5 / 8
    v = 4 / math.pi**2 * (math.atan(0.5) - math.atan(2.0)) ** 2
    assert diou_loss(wide, tall).item() == pytest.approx(diou, rel=1e-5)
    assert ciou_loss(wide, tall).item() == pytest.approx(diou + v * v / (2 / 3 + v), rel=1e-5)
    both = torch.stack([same[0], wide]), torch.stack([shifted[0], tall])
    assert diou_loss(*both, reduction="sum").item() == pytest.approx(
        1 - 1 / 3 + 1 / 13 + diou, rel=1e-5
    )
    assert diou_loss(*both, reduction="mean").item() == pytest.approx(
        (1 - 1 / 3 + 1 / 13 + diou) / 2, rel=1e-5
    )
    assert diou_loss(torch.zeros(0, 4), torch.zeros(0, 4), reduction="mean").item() == 0.0
