import itertools
import math

import pytest
import torch

from detrex_ext.layers import point_sample
from detrex_ext.modeling import (
    FocalClassCost,
    GIoUBoxCost,
    HungarianMatcher,
    L1BoxCost,
    MaskBCECost,
    MaskDiceCost,
    SoftmaxClassCost,
)


def _random_boxes(n):
    centers = torch.rand(n, 2) * 0.6 + 0.2
    sizes = torch.rand(n, 2) * 0.3 + 0.05
    return torch.cat([centers, sizes], -1)


def _random_case(batch=2, queries=5, classes=4, num_targets=(3, 2), mask_size=(8, 10)):
    outputs = {
        "pred_logits": torch.randn(batch, queries, classes) * 2,
        "pred_boxes": torch.stack([_random_boxes(queries) for _ in range(batch)]),
        "pred_masks": torch.randn(batch, queries, *mask_size) * 3,
    }
    targets = []
    for n in num_targets:
        targets.append(
            {
                "labels": torch.randint(0, classes, (n,)),
                "boxes": _random_boxes(n),
                "masks": torch.rand(n, 2 * mask_size[0], 2 * mask_size[1]) > 0.5,
            }
        )
    return outputs, targets


def _brute_force_min(cost):
    """Minimum total cost over all injective assignments (brute-force enumeration)."""
    q, t = cost.shape
    best = math.inf
    if t <= q:
        for queries in itertools.permutations(range(q), t):
            best = min(best, sum(cost[queries[j], j].item() for j in range(t)))
    else:
        for tgts in itertools.permutations(range(t), q):
            best = min(best, sum(cost[i, tgts[i]].item() for i in range(q)))
    return best


MASK_DINO_WEIGHTS = dict(cost_class=4.0, cost_bbox=5.0, cost_giou=2.0, cost_mask=5.0, cost_dice=5.0)


@pytest.mark.parametrize("queries,num_targets", [(5, (3, 2)), (4, (4, 1)), (2, (4, 3))])
def test_matcher_is_optimal_against_brute_force(queries, num_targets):
    outputs, targets = _random_case(queries=queries, num_targets=num_targets)
    matcher = HungarianMatcher(**MASK_DINO_WEIGHTS, num_points=64)
    indices = matcher(outputs, targets, generator=torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)  # replay the same points, image by image
    for b, (rows, cols) in enumerate(indices):
        pred = {k: v[b] for k, v in outputs.items()}
        cost = matcher.cost_matrix(pred, targets[b], generator=generator)
        assert len(rows) == len(cols) == min(queries, num_targets[b])
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert rows.dtype == cols.dtype == torch.int64
        assert torch.equal(rows, rows.sort().values)
        total = cost[rows, cols].sum().item()
        assert total == pytest.approx(_brute_force_min(cost), rel=1e-6, abs=1e-6)


def test_cost_terms_against_hand_formulas():
    torch.manual_seed(1)
    outputs, targets = _random_case(batch=1, queries=3, num_targets=(2,))
    pred = {k: v[0] for k, v in outputs.items()}
    target = targets[0]
    num_points = 16
    matcher = HungarianMatcher(**MASK_DINO_WEIGHTS, num_points=num_points)
    cost = matcher.cost_matrix(pred, target, generator=torch.Generator().manual_seed(9))

    coords = torch.rand(1, num_points, 2, generator=torch.Generator().manual_seed(9))
    pred_pts = point_sample(pred["pred_masks"][:, None], coords.expand(3, -1, -1))[:, 0]
    tgt_pts = point_sample(target["masks"][:, None].float(), coords.expand(2, -1, -1))[:, 0]
    expected = torch.zeros(3, 2)
    for q in range(3):
        for t in range(2):
            label = target["labels"][t]
            p = torch.sigmoid(pred["pred_logits"][q, label]).item()
            pos = 0.25 * (1 - p) ** 2 * -math.log(p + 1e-8)
            neg = 0.75 * p**2 * -math.log(1 - p + 1e-8)
            l1 = (pred["pred_boxes"][q] - target["boxes"][t]).abs().sum().item()
            (pcx, pcy, pw, ph), (tcx, tcy, tw, th) = (
                pred["pred_boxes"][q].tolist(),
                target["boxes"][t].tolist(),
            )
            a = (pcx - pw / 2, pcy - ph / 2, pcx + pw / 2, pcy + ph / 2)
            c = (tcx - tw / 2, tcy - th / 2, tcx + tw / 2, tcy + th / 2)
            inter = max(0, min(a[2], c[2]) - max(a[0], c[0])) * max(
                0, min(a[3], c[3]) - max(a[1], c[1])
            )
            union = pw * ph + tw * th - inter
            hull = (max(a[2], c[2]) - min(a[0], c[0])) * (max(a[3], c[3]) - min(a[1], c[1]))
            giou = inter / union - (hull - union) / hull
            bce, s_sum, st_sum, t_sum = 0.0, 0.0, 0.0, 0.0
            for k in range(num_points):
                x, y = pred_pts[q, k].item(), tgt_pts[t, k].item()
                s = 1 / (1 + math.exp(-x))
                bce += -(y * math.log(s) + (1 - y) * math.log(1 - s))
                s_sum, st_sum, t_sum = s_sum + s, st_sum + s * y, t_sum + y
            dice = 1 - (2 * st_sum + 1) / (s_sum + t_sum + 1)
            expected[q, t] = 4 * (pos - neg) + 5 * l1 - 2 * giou + 5 * bce / num_points + 5 * dice
    torch.testing.assert_close(cost, expected, rtol=1e-4, atol=1e-4)


def test_mask_costs_share_one_point_set():
    # a prediction equal to a target's own mask (as logits) must see the same sampled values
    masks = torch.zeros(2, 16, 16)
    masks[0, :8] = 1
    masks[1, :, 4:12] = 1
    pred = {"pred_masks": (masks - 0.5) * 40}
    target = {"masks": masks.bool(), "labels": torch.tensor([0, 1])}
    matcher = HungarianMatcher(costs=[MaskDiceCost(1.0)], num_points=200)
    cost = matcher.cost_matrix(pred, target, generator=torch.Generator().manual_seed(0))
    assert cost[0, 0] < 0.05 and cost[1, 1] < 0.05  # same points -> near-perfect dice
    assert cost[0, 1] > 0.3 and cost[1, 0] > 0.3


def test_empty_targets_and_cost_kinds_subset():
    outputs, targets = _random_case(num_targets=(0, 2))
    matcher = HungarianMatcher(**MASK_DINO_WEIGHTS, num_points=32)
    indices = matcher(outputs, targets)
    assert indices[0][0].numel() == 0 and indices[0][1].numel() == 0
    assert indices[0][0].dtype == torch.int64 and len(indices[1][0]) == 2
    box_only = {k: v for k, v in outputs.items() if k != "pred_masks"}
    indices = matcher(box_only, targets, cost_kinds=("cls", "box"))
    assert len(indices[1][0]) == 2
    with pytest.raises(ValueError, match="No cost term"):
        matcher.cost_matrix(
            {"pred_logits": outputs["pred_logits"][0]}, targets[1], cost_kinds=("x",)
        )
    with pytest.raises(ValueError, match="nonzero weight"):
        HungarianMatcher(cost_class=0, cost_bbox=0, cost_giou=0)


def test_nan_and_inf_costs_are_sanitised_with_warning():
    outputs, targets = _random_case(batch=1, queries=4, num_targets=(2,))
    outputs["pred_boxes"][0, 1] = float("nan")
    outputs["pred_logits"][0, 2] = float("inf")
    matcher = HungarianMatcher(cost_class=1, cost_bbox=1, cost_giou=1)
    with pytest.warns(RuntimeWarning, match="NaN/inf"):
        indices = matcher(outputs, targets)
    rows, cols = indices[0]
    assert sorted(cols.tolist()) == [0, 1]
    assert 1 not in rows.tolist()  # the NaN query is never preferred


def test_custom_terms_and_determinism():
    outputs, targets = _random_case(num_targets=(3, 3))
    matcher = HungarianMatcher(
        costs=[SoftmaxClassCost(2.0), L1BoxCost(1.0), GIoUBoxCost(1.0), MaskBCECost(1.0)],
        num_points=32,
    )
    a = matcher(outputs, targets, generator=torch.Generator().manual_seed(3))
    b = matcher(outputs, targets, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    # softmax class cost: perfectly confident queries are matched to their class
    logits = torch.full((1, 3, 4), -10.0)
    logits[0, 0, 2] = logits[0, 1, 0] = logits[0, 2, 1] = 10.0
    target = [{"labels": torch.tensor([0, 1, 2])}]
    rows, cols = HungarianMatcher(costs=[SoftmaxClassCost()])({"pred_logits": logits}, target)[0]
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 2, 1: 0, 2: 1}
    assert FocalClassCost(eps=1e-5).eps == 1e-5
