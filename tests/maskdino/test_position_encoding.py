"""Mask2Former's ``PositionEmbeddingSine(x, mask)`` used by Mask DINO's pixel decoder: the sine
formula by hand, padding, offset; and equality with detrex's mask-only variant."""

import math

import pytest
import torch

from detrex_ext.layers import PositionEmbeddingSine as DetrexPositionEmbeddingSine
from detrex_projects.maskdino.modeling.position_encoding import PositionEmbeddingSine


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


def test_same_values_as_detrex_mask_only_variant():
    mask = torch.zeros(2, 5, 7, dtype=torch.bool)
    mask[1, 3:, :] = True
    ours = PositionEmbeddingSine(num_pos_feats=6)(torch.zeros(2, 3, 5, 7), mask)
    detrex = DetrexPositionEmbeddingSine(num_pos_feats=6, normalize=True)(mask)
    torch.testing.assert_close(ours, detrex, rtol=0, atol=0)
