"""query_masks: the einsum of mask embeddings and mask features, whose backward skips the queries
without gradient, gives the einsum's values and gradients."""

from __future__ import annotations

import pytest
import torch

from detrex_projects.maskdino.modeling.mask_product import query_masks


def _leaves(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    embed = torch.randn(2, 7, 5, generator=g, dtype=dtype).requires_grad_(True)
    features = torch.randn(2, 5, 4, 6, generator=g, dtype=dtype).requires_grad_(True)
    return embed, features


@pytest.mark.parametrize("dead_rows", ["some", "none", "all of image 1"])
def test_values_and_gradients_equal_the_einsum(dead_rows):
    grad = torch.randn(2, 7, 4, 6, dtype=torch.float64)
    if dead_rows == "some":
        grad[0, [1, 4]] = 0
        grad[1, [0, 2, 3, 6]] = 0
        grad[1, 5, 2, 3] = 0  # a row with one zero entry is still live
    elif dead_rows == "all of image 1":
        grad[1] = 0
    ours, theirs = _leaves(), _leaves()
    out = query_masks(*ours)
    expected = torch.einsum("bqc,bchw->bqhw", *theirs)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    out.backward(grad)
    expected.backward(grad)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)


def test_gradcheck_and_one_sided_gradients():
    embed, features = _leaves()
    assert torch.autograd.gradcheck(query_masks, (embed, features))
    frozen = features.detach()
    out = query_masks(embed, frozen)
    out.sum().backward()
    assert embed.grad is not None and frozen.grad is None


def test_plain_einsum_without_gradient_or_under_autocast():
    embed, features = _leaves(dtype=torch.float32)
    with torch.no_grad():
        assert query_masks(embed, features).grad_fn is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = query_masks(embed, features)
    assert out.dtype == torch.bfloat16 and "QueryMasks" not in type(out.grad_fn).__name__
    assert "QueryMasks" in type(query_masks(embed, features).grad_fn).__name__
