import math

import pytest
import torch

from detrex_ext.modeling import (
    dice_loss,
    giou_loss,
    l1_box_loss,
    point_sampled_mask_losses,
    reduce_num_objects,
    sigmoid_ce_loss,
    sigmoid_focal_loss,
)
from detrex_ext.utils import comm


def _focal_element(x, t, alpha=0.25, gamma=2.0):
    p = 1 / (1 + math.exp(-x))
    ce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    return alpha_t * (1 - p_t) ** gamma * ce


def test_sigmoid_focal_loss_hand_computed():
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 3.0], [0.5, -0.5]]])  # [B=1, Q=3, C=2]
    targets = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]])
    total = sum(
        _focal_element(logits[0, q, c].item(), targets[0, q, c].item())
        for q in range(3)
        for c in range(2)
    )
    # mean over queries, sum over the rest, / num_boxes -> total / (Q * num_boxes)
    loss = sigmoid_focal_loss(logits, targets, num_boxes=2.0)
    assert loss.item() == pytest.approx(total / 3 / 2.0, rel=1e-6)
    # x = 0, t = 1 alone: 0.25 * 0.5**2 * log 2
    single = sigmoid_focal_loss(torch.zeros(1, 1, 1), torch.ones(1, 1, 1), num_boxes=1.0)
    assert single.item() == pytest.approx(0.0625 * math.log(2), rel=1e-6)


def test_dice_and_sigmoid_ce_hand_computed():
    logits = torch.tensor([[0.0, 0.0], [100.0, -100.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # mask 0: s = (.5, .5): 1 - (2 * .5 + 1) / (1 + 1 + 1) = 1/3; mask 1: perfect -> 0
    assert dice_loss(logits, targets, num_masks=2.0).item() == pytest.approx(1 / 6, rel=1e-6)
    # mask 0: log 2 per point; mask 1: ~0
    assert sigmoid_ce_loss(logits, targets, num_masks=2.0).item() == pytest.approx(
        math.log(2) / 2, rel=1e-6
    )


def test_box_losses_hand_computed():
    pred = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2]])
    target = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.4, 0.3, 0.2, 0.2]])
    assert l1_box_loss(pred, target, num_boxes=2.0).item() == pytest.approx(0.05, rel=1e-5)
    # second pair: boxes [0.2,0.2,0.4,0.4] and [0.3,0.2,0.5,0.4]: inter 0.02, union 0.06, hull 0.06
    assert giou_loss(pred, target, num_boxes=2.0).item() == pytest.approx((1 - 1 / 3) / 2, rel=1e-5)
    assert giou_loss(pred[:0], target[:0], 1.0).item() == 0.0


def test_point_sampled_mask_losses_hand_computed():
    logits = torch.zeros(2, 8, 8, requires_grad=True)
    # zero logits read 0 even in the zero-padded border band, so s = 0.5 at every point; all-zero
    # targets likewise read exactly 0 everywhere
    targets = torch.zeros(2, 32, 32, dtype=torch.bool)
    num_points = 50
    losses = point_sampled_mask_losses(logits, targets, num_masks=4.0, num_points=num_points)
    assert losses["loss_mask"].item() == pytest.approx(2 * math.log(2) / 4, rel=1e-5)
    # s = 0.5 and t = 0 at every point: 1 - 1 / (0.5 P + 1)
    dice = 1 - 1 / (0.5 * num_points + 1)
    assert losses["loss_dice"].item() == pytest.approx(2 * dice / 4, rel=1e-5)
    (losses["loss_mask"] + losses["loss_dice"]).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    empty = point_sampled_mask_losses(logits[:0], targets[:0], 1.0, num_points=8)
    assert empty["loss_mask"].item() == 0.0 and empty["loss_dice"].requires_grad


def test_point_sampled_mask_losses_deterministic_with_generator():
    logits, targets = torch.randn(3, 8, 8), torch.rand(3, 16, 16) > 0.5
    a = point_sampled_mask_losses(
        logits, targets, 3.0, 40, generator=torch.Generator().manual_seed(1)
    )
    b = point_sampled_mask_losses(
        logits, targets, 3.0, 40, generator=torch.Generator().manual_seed(1)
    )
    assert a["loss_mask"] == b["loss_mask"] and a["loss_dice"] == b["loss_dice"]


@pytest.mark.parametrize(
    "gather_limit", [0, 4 * 37 * 29 * 2, 1 << 30], ids=["per-target", "steps-of-2", "gathered"]
)
def test_indexed_target_masks_give_the_gathered_masks_losses(monkeypatch, gather_limit):
    """``target_index`` (distinct masks + index, as the criterion passes them) gives bit for bit
    the losses and gradients of the gathered ``[N, H, W]`` masks: repeated, unused and
    out-of-order targets, 1000 points each (several vector widths and a tail); when each
    distinct target is sampled on its own (large masks: more gathering steps than targets),
    gathered two rows per step, and all at once (small)."""
    from detrex_ext.modeling import losses as losses_module

    monkeypatch.setattr(losses_module, "_GATHERED_TARGETS_BYTES", gather_limit)
    calls = []
    sample = losses_module._sample_indexed_masks
    monkeypatch.setattr(
        losses_module, "_sample_indexed_masks", lambda *a: calls.append(1) or sample(*a)
    )
    torch.manual_seed(0)
    distinct = torch.rand(5, 37, 29) > 0.5
    index = torch.tensor([3, 0, 3, 3, 1, 0, 4])  # target 2 unused, 3 used three times
    results = []
    for kwargs in ({"target_index": index}, {}):
        logits = torch.randn(7, 9, 11, generator=torch.Generator().manual_seed(2))
        logits.requires_grad_(True)
        targets = distinct if kwargs else distinct[index]
        losses = point_sampled_mask_losses(
            logits, targets, 3.0, 1000, generator=torch.Generator().manual_seed(1), **kwargs
        )
        (losses["loss_mask"] + losses["loss_dice"]).backward()
        results.append((losses["loss_mask"], losses["loss_dice"], logits.grad))
    for ours, gathered in zip(*results):
        assert torch.equal(ours, gathered)
    assert len(calls) == (1 if gather_limit == 0 else 0)


def test_reduce_num_objects_single_and_simulated_processes(monkeypatch):
    assert reduce_num_objects(5) == 5.0
    assert reduce_num_objects(torch.tensor(0)) == 1.0  # clamped to >= 1
    # two processes holding 3 and 6 objects -> (3 + 6) / 2
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(comm, "all_reduce_sum", lambda t: t.add_(6.0))
    assert reduce_num_objects(3) == 4.5


def test_reduce_num_objects_of_a_host_count_never_reads_a_tensor_back(monkeypatch):
    """In one process a Python count is returned as is: no device tensor, no host sync."""

    def forbidden(*_args, **_kwargs):
        raise AssertionError("a tensor was read back to the host")

    monkeypatch.setattr(torch.Tensor, "item", forbidden)
    assert reduce_num_objects(19) == 19.0
    assert reduce_num_objects(0) == 1.0


@pytest.mark.parametrize("joined_bytes", [8 << 20, 0], ids=["joined", "one-job-per-step"])
def test_many_jobs_in_one_pass_equal_one_call_per_job(monkeypatch, joined_bytes):
    """``point_sampled_mask_losses_many`` draws what one call per job draws, in job order (the
    empty job draws nothing), and gives each job bit for bit its values and gradients; a
    job with masks of another size is processed on its own (drawn in its turn), and so is every
    job when the joined-candidates bound is below one job."""
    from detrex_ext.modeling import losses as losses_module
    from detrex_ext.modeling import point_sampled_mask_losses_many

    monkeypatch.setattr(losses_module, "_JOINED_CANDIDATE_BYTES", joined_bytes)
    logits = [torch.zeros(n, 8, 10) for n in (3, 0, 5, 2, 4)]
    steps = losses_module._joined_steps(logits, [0, 2, 3, 4], 120)
    assert steps == ([[0, 2, 3, 4]] if joined_bytes else [[0], [2], [3], [4]])

    torch.manual_seed(0)
    targets = torch.rand(4, 24, 20) > 0.5
    sizes = [(3, 8, 10), (0, 8, 10), (5, 8, 10), (2, 6, 6), (4, 8, 10)]
    indices = [torch.randint(0, 4, (n,)) for n, _, _ in sizes]
    norms = [2.0, 1.0, 3.5, 1.5, 4.0]

    def run(together: bool):
        logits = [
            torch.randn(*s, generator=torch.Generator().manual_seed(k)) for k, s in enumerate(sizes)
        ]
        for x in logits:
            x.requires_grad_(True)
        generator = torch.Generator().manual_seed(9)
        if together:
            results = point_sampled_mask_losses_many(
                logits, targets, indices, norms, 40, 3.0, 0.75, generator
            )
        else:
            results = [
                point_sampled_mask_losses(x, targets, n, 40, 3.0, 0.75, generator, target_index=i)
                for x, i, n in zip(logits, indices, norms)
            ]
        sum(r["loss_mask"] + 2 * r["loss_dice"] for r in results).backward()
        return results, [x.grad for x in logits], generator.get_state()

    many, many_grads, many_state = run(True)
    alone, alone_grads, alone_state = run(False)
    assert torch.equal(many_state, alone_state)  # the same number of draws
    for a, b in zip(many, alone):
        assert torch.equal(a["loss_mask"], b["loss_mask"]) and torch.equal(
            a["loss_dice"], b["loss_dice"]
        )
    for a, b in zip(many_grads, alone_grads):
        assert torch.equal(a, b)
    assert many[1]["loss_mask"].item() == 0.0 and many[0]["loss_mask"].item() > 0
    with pytest.raises(ValueError, match="target index"):
        point_sampled_mask_losses_many([torch.zeros(1, 2, 2)] * 2, targets, [None, None], [1, 1])
