"""detrex's loss modules (FocalLoss, CrossEntropyLoss, L1Loss, GIoULoss) with its reduction
rules (element weights, avg_factor, loss_weight), against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from detrex_ext.modeling.losses import CrossEntropyLoss, FocalLoss, GIoULoss, L1Loss

LN2 = math.log(2)


def test_l1_loss_reductions_weights_and_avg_factor():
    preds, targets = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.zeros(2, 2)
    assert L1Loss()(preds, targets).item() == 2.5
    assert L1Loss(reduction="sum")(preds, targets).item() == 10.0
    assert L1Loss(reduction="none")(preds, targets).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert L1Loss()(preds, targets, weight=weight).item() == 1.25  # (1 + 4) / 4
    assert L1Loss()(preds, targets, avg_factor=2).item() == pytest.approx(5.0)  # 10 / 2
    assert L1Loss(loss_weight=3.0)(preds, targets).item() == 7.5
    empty = torch.zeros(0, 4, requires_grad=True)
    assert L1Loss()(empty, torch.zeros(0, 4)).item() == 0.0
    with pytest.raises(ValueError, match="avg_factor"):
        L1Loss(reduction="sum")(preds, targets, avg_factor=2)


def test_focal_loss_by_hand():
    # logits 0 -> p = 0.5, BCE = ln 2 and (1 - p_t)^2 = 1/4 for every element;
    # alpha_t = 0.25 for the target class, 0.75 otherwise
    logits = torch.zeros(1, 2)
    positive = FocalLoss(reduction="none")(logits, torch.tensor([0]))
    assert positive.tolist()[0] == pytest.approx([0.25 * 0.25 * LN2, 0.75 * 0.25 * LN2])
    assert FocalLoss()(logits, torch.tensor([0])).item() == pytest.approx(0.125 * LN2)
    # class id 2 = background: both elements are negatives
    assert FocalLoss()(logits, torch.tensor([2])).item() == pytest.approx(0.1875 * LN2)
    # probabilities instead of logits give the same numbers
    probs = torch.full((1, 2), 0.5)
    activated = FocalLoss(activated=True)(probs, torch.tensor([0])).item()
    assert activated == pytest.approx(0.125 * LN2)
    # gamma 0 and no alpha is plain BCE with logits
    plain = FocalLoss(alpha=-1, gamma=0.0, reduction="sum")(
        torch.tensor([[2.0]]), torch.tensor([0])
    )
    assert plain.item() == pytest.approx(math.log(1 + math.exp(-2.0)))


def test_cross_entropy_ignore_index_and_averaging():
    logits = torch.zeros(2, 2)  # uniform: ln 2 per target
    targets = torch.tensor([0, 1])
    assert CrossEntropyLoss()(logits, targets).item() == pytest.approx(LN2)
    # the ignored target gives 0; averaged over both targets or only the kept one
    ignored = CrossEntropyLoss(ignore_index=1)(logits, targets).item()
    assert ignored == pytest.approx(LN2 / 2)
    non_ignored = CrossEntropyLoss(ignore_index=1, avg_non_ignore=True)(logits, targets)
    assert non_ignored.item() == pytest.approx(LN2)
    weighted = CrossEntropyLoss(reduction="sum")(
        logits, targets, class_weight=torch.tensor([2.0, 0.0])
    )
    assert weighted.item() == pytest.approx(2 * LN2)


def test_giou_loss_by_hand():
    box = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert GIoULoss()(box, box).item() == pytest.approx(0.0, abs=1e-5)
    # disjoint unit boxes 1 apart: IoU 0, enclosing 3, union 2 -> GIoU = -1/3, loss 4/3
    far = torch.tensor([[2.0, 0.0, 3.0, 1.0]])
    assert GIoULoss()(box, far).item() == pytest.approx(4 / 3, rel=1e-5)
    # half overlap: IoU 1/3, enclosing = union -> loss 2/3; mean of both pairs
    half = torch.tensor([[0.5, 0.0, 1.5, 1.0]])
    pairs = GIoULoss(loss_weight=2.0)(torch.cat([box, box]), torch.cat([far, half]))
    assert pairs.item() == pytest.approx(2.0 * (4 / 3 + 2 / 3) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="x2 < x1"):
        GIoULoss()(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), box)
