import math

import pytest
import torch

from detrex_ext.layers import (
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    calculate_uncertainty,
    generalized_box_iou,
    get_uncertain_point_coords_with_randomness,
    inverse_sigmoid,
    masks_to_boxes,
    point_sample,
)


def test_box_conversions_by_hand():
    cxcywh = torch.tensor([[0.5, 0.4, 0.2, 0.6], [0.1, 0.1, 0.2, 0.2]])
    xyxy = torch.tensor([[0.4, 0.1, 0.6, 0.7], [0.0, 0.0, 0.2, 0.2]])
    torch.testing.assert_close(box_cxcywh_to_xyxy(cxcywh), xyxy)
    torch.testing.assert_close(box_xyxy_to_cxcywh(xyxy), cxcywh)


def test_iou_and_generalized_iou_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [4.0, 0.0, 5.0, 1.0]])
    # overlap 1, union 7, enclosing 9 -> giou = 1/7 - 2/9; disjoint: iou 0, enclosing 10, union 5
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 0.0]]))
    torch.testing.assert_close(generalized_box_iou(a, b), torch.tensor([[1 / 7 - 2 / 9, -0.5]]))


def test_masks_to_boxes_conventions_and_empty_masks():
    masks = torch.zeros(3, 5, 6, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True  # rows 1..2, cols 2..4
    masks[1, 4, 0] = True
    inclusive = masks_to_boxes(masks)
    torch.testing.assert_close(
        inclusive, torch.tensor([[2.0, 1.0, 4.0, 2.0], [0.0, 4.0, 0.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    )
    exclusive = masks_to_boxes(masks, exclusive_max=True)
    torch.testing.assert_close(exclusive[:2], inclusive[:2] + torch.tensor([0.0, 0.0, 1.0, 1.0]))
    torch.testing.assert_close(exclusive[2], torch.zeros(4))
    sentinel = masks_to_boxes(masks, empty_box=(1e8, 1e8, 0.0, 0.0))
    torch.testing.assert_close(sentinel[2], torch.tensor([1e8, 1e8, 0.0, 0.0]))
    assert masks_to_boxes(torch.zeros(0, 4, 4, dtype=torch.bool)).shape == (0, 4)


def test_inverse_sigmoid():
    x = torch.tensor([0.0, 0.25, 0.5, 0.9, 1.0, 1.5, -0.2])
    out = inverse_sigmoid(x)
    torch.testing.assert_close(out[1:4], torch.logit(x[1:4]))
    assert math.isclose(out[0].item(), math.log(1e-5), rel_tol=1e-5)
    assert math.isclose(out[4].item(), -math.log(1e-5), rel_tol=1e-5)
    assert out[5] == out[4] and out[6] == out[0]  # clamped to [0, 1] first
    torch.testing.assert_close(
        inverse_sigmoid(torch.tensor([0.0]), eps=1e-3), torch.tensor([math.log(1e-3)])
    )


def test_point_sample_pixel_centres_and_bilinear():
    image = torch.arange(12.0).view(1, 1, 3, 4)
    # (x, y) at pixel centres (j + 0.5) / W, (i + 0.5) / H gives the pixel values exactly
    coords = torch.tensor([[[0.5 / 4, 0.5 / 3], [3.5 / 4, 2.5 / 3], [1.0 / 4, 0.5 / 3]]])
    out = point_sample(image, coords)
    assert out.shape == (1, 1, 3)
    torch.testing.assert_close(out[0, 0], torch.tensor([0.0, 11.0, 0.5]))
    grid = coords.view(1, 3, 1, 2)
    assert point_sample(image, grid).shape == (1, 1, 3, 1)
    corner = point_sample(image, torch.tensor([[[0.0, 0.0]]]))  # zero padding blends with 0
    torch.testing.assert_close(corner[0, 0], torch.tensor([0.0 * 0.25]))


def test_uncertain_points_prefer_uncertain_region():
    logits = torch.full((2, 1, 8, 8), 10.0)
    logits[:, :, :, :4] = 0.0  # left half: maximally uncertain
    gen = torch.Generator().manual_seed(3)
    coords = get_uncertain_point_coords_with_randomness(
        logits,
        calculate_uncertainty,
        num_points=20,
        oversample_ratio=3,
        importance_sample_ratio=0.75,
        generator=gen,
    )
    assert coords.shape == (2, 20, 2)
    assert (coords >= 0).all() and (coords <= 1).all()
    # the 15 importance points come from the uncertain left part (x < 0.5 + half a pixel)
    assert (coords[:, :15, 0] < 0.5 + 1 / 16).all()
    # same generator seed -> same points
    again = get_uncertain_point_coords_with_randomness(
        logits, calculate_uncertainty, 20, 3, 0.75, generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(coords, again)


def test_calculate_uncertainty():
    torch.testing.assert_close(
        calculate_uncertainty(torch.tensor([[-2.0, 0.5, 0.0]])), torch.tensor([[-2.0, -0.5, 0.0]])
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("maps_per_step", [1, 2, 3], ids=["1-map-steps", "2-map-steps", "one-step"])
def test_uncertain_points_are_the_most_uncertain_candidates(monkeypatch, dtype, maps_per_step):
    """Brute force: replay the candidate draw, rank the candidates by uncertainty with a full
    sort, and check the kept importance points are exactly the top ones (as a set: their order
    is not specified) and the rest are the next fresh draws. On CPU the maps are ranked in steps
    (small buffers); the result does not depend on the step size."""
    from detrex_ext.layers import point_features

    # 48 candidates of 2 float32 coordinates: 384 bytes per map
    monkeypatch.setattr(point_features, "_CANDIDATE_STEP_BYTES", 384 * maps_per_step)
    logits = torch.randn(3, 1, 6, 7, dtype=dtype)
    num_points, oversample, ratio = 16, 3.0, 0.75
    coords = get_uncertain_point_coords_with_randomness(
        logits,
        calculate_uncertainty,
        num_points,
        oversample,
        ratio,
        torch.Generator().manual_seed(5),
    )
    replay = torch.Generator().manual_seed(5)
    candidates = torch.rand(3, 48, 2, generator=replay).to(dtype)
    extra = torch.rand(3, 4, 2, generator=replay).to(dtype)
    scores = calculate_uncertainty(point_sample(logits, candidates))[:, 0]
    order = scores.argsort(dim=1, descending=True, stable=True)[:, :12]
    for n in range(3):
        expected = {tuple(p) for p in candidates[n, order[n]].tolist()}
        assert {tuple(p) for p in coords[n, :12].tolist()} == expected
    assert torch.equal(coords[:, 12:], extra)
    assert coords.dtype == dtype
