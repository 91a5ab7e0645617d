"""WarmupParamScheduler, IterationMultiStepParamScheduler and LRMultiplier, against hand values."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from fvcore.common.param_scheduler import (
    ConstantParamScheduler,
    CosineParamScheduler,
    MultiStepParamScheduler,
)

from detrex_ext.solver import IterationMultiStepParamScheduler, LRMultiplier, WarmupParamScheduler

MAX_ITER = 100


def _steps() -> IterationMultiStepParamScheduler:
    return IterationMultiStepParamScheduler(
        values=[1.0, 0.1, 0.01], milestones=[60, 80], num_updates=MAX_ITER
    )


def _warm_steps() -> WarmupParamScheduler:
    return WarmupParamScheduler(_steps(), warmup_factor=0.001, warmup_iters=10, max_iter=MAX_ITER)


# value(iteration) worked out by hand: linear warmup 0.001 -> 1 over 10 iterations, then the steps
HAND_VALUES = {
    0: 0.001,
    5: 0.5005,
    9: 0.9001,
    10: 1.0,
    59: 1.0,
    60: 0.1,
    79: 0.1,
    80: 0.01,
    99: 0.01,
}


@pytest.mark.parametrize("iteration, value", sorted(HAND_VALUES.items()))
def test_linear_warmup_then_steps(iteration, value):
    assert _warm_steps()(iteration / MAX_ITER) == pytest.approx(value)


def test_warmup_in_iterations_equals_detectron2_fraction():
    fraction = WarmupParamScheduler(_steps(), warmup_factor=0.001, warmup_length=0.1)
    iters = _warm_steps()
    assert [fraction(i / MAX_ITER) for i in range(MAX_ITER)] == [
        iters(i / MAX_ITER) for i in range(MAX_ITER)
    ]


def test_constant_warmup():
    s = WarmupParamScheduler(
        _steps(), warmup_factor=0.25, warmup_iters=10, max_iter=MAX_ITER, warmup_method="constant"
    )
    assert [s(i / MAX_ITER) for i in (0, 9, 10)] == [0.25, 0.25, 1.0]


def test_warmup_hand_off_with_and_without_rescaling():
    cosine = CosineParamScheduler(start_value=1.0, end_value=0.0)
    fixed = WarmupParamScheduler(cosine, warmup_factor=0.001, warmup_iters=10, max_iter=MAX_ITER)
    # warmup ends at cosine(0.1) = 0.5 * (1 + cos(0.1 pi)); halfway: mean of 0.001 and that
    end = 0.5 * (1 + math.cos(0.1 * math.pi))
    assert fixed(0.05) == pytest.approx((0.001 + end) / 2)
    assert fixed(0.5) == pytest.approx(0.5)  # the main schedule reads global progress
    rescaled = WarmupParamScheduler(
        cosine, 0.001, warmup_iters=10, max_iter=MAX_ITER, rescale_interval=True
    )
    assert rescaled(0.05) == pytest.approx((0.001 + 1.0) / 2)  # warms up to cosine(0)
    assert rescaled(0.55) == pytest.approx(0.5)  # cosine at (0.55 - 0.1) / 0.9 = 0.5


def test_warmup_argument_errors(caplog):
    with pytest.raises(ValueError, match=r"either as warmup_length .* not both and not neither"):
        WarmupParamScheduler(_steps(), 0.1)
    with pytest.raises(ValueError, match=r"not both"):
        WarmupParamScheduler(_steps(), 0.1, warmup_length=0.1, warmup_iters=3, max_iter=10)
    with pytest.raises(ValueError, match=r"warmup_iters needs max_iter > 0 \(got max_iter=None\)"):
        WarmupParamScheduler(_steps(), 0.1, warmup_iters=3)
    with pytest.raises(
        ValueError, match=r"warmup_length must be in \[0, 1\) \(a fraction of training\), got 1.0"
    ):
        WarmupParamScheduler(_steps(), 0.1, warmup_length=1.0)
    with pytest.raises(
        ValueError, match=r"unknown warmup_method 'cosine'; use 'linear' or 'constant'"
    ):
        WarmupParamScheduler(_steps(), 0.1, warmup_length=0.1, warmup_method="cosine")
    with caplog.at_level(logging.WARNING):
        short = WarmupParamScheduler(
            ConstantParamScheduler(1.0), 0.0, warmup_iters=1000, max_iter=20
        )
    assert "warmup of 1000 iterations is not shorter than the run (max_iter=20)" in caplog.text
    assert short.warmup_length == pytest.approx(19 / 20)
    assert short(10 / 20) == pytest.approx(10 / 19)


def test_absolute_milestones_at_mask_dino_scale():
    total = 368750
    ours = IterationMultiStepParamScheduler([1.0, 0.1, 0.01], [327778, 355092], num_updates=total)
    assert [ours(i / total) for i in (327777, 327778, 355091, 355092, total - 1)] == pytest.approx(
        [1.0, 0.1, 0.1, 0.01, 0.01]
    )
    # The pitfall this avoids: fvcore without num_updates treats the last milestone as the end of
    # training, which moves the only drop to iteration 340386 (detrex's Mask DINO configs).
    scale_invariant = MultiStepParamScheduler(values=[1.0, 0.1], milestones=[327778, 355092])
    assert (scale_invariant(340385 / total), scale_invariant(340386 / total)) == (1.0, 0.1)


def test_milestones_past_the_end_are_dropped(caplog):
    with caplog.at_level(logging.WARNING):
        s = IterationMultiStepParamScheduler([1.0, 0.1, 0.01], [50, 150], num_updates=100)
    assert (
        "lr milestones [150] are not before num_updates=100, so they are never reached"
        in caplog.text
    )
    assert [s(i / 100) for i in (49, 50, 99)] == [1.0, 0.1, 0.1]
    tiny = IterationMultiStepParamScheduler([1.0, 0.1], [300000], num_updates=1)
    assert tiny(0.0) == 1.0
    with pytest.raises(ValueError, match=r"2 milestones need 3 values, got 2"):
        IterationMultiStepParamScheduler([1.0, 0.1], [1, 2], num_updates=10)


def _optimizer() -> torch.optim.SGD:
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    return torch.optim.SGD(
        [{"params": [params[0]], "lr": 0.5}, {"params": [params[1]], "lr": 0.05}]
    )


def _run(
    scheduler: LRMultiplier, optimizer: torch.optim.Optimizer, steps: int
) -> list[list[float]]:
    lrs = []
    for _ in range(steps):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return lrs


def test_lr_multiplier_drives_every_param_group():
    optimizer = _optimizer()
    scheduler = LRMultiplier(optimizer, _warm_steps(), max_iter=MAX_ITER)
    lrs = _run(scheduler, optimizer, 130)
    for iteration, value in HAND_VALUES.items():
        assert lrs[iteration] == pytest.approx([0.5 * value, 0.05 * value])
    # past max_iter the last value is kept (fvcore would refuse progress >= 1)
    assert lrs[129] == pytest.approx([0.5 * 0.01, 0.05 * 0.01])
    assert scheduler.get_last_lr() == pytest.approx([0.5 * 0.01, 0.05 * 0.01])


def test_lr_multiplier_resumes_from_its_state_dict():
    optimizer = _optimizer()
    reference = _run(LRMultiplier(optimizer, _warm_steps(), max_iter=MAX_ITER), optimizer, 70)

    optimizer = _optimizer()
    scheduler = LRMultiplier(optimizer, _warm_steps(), max_iter=MAX_ITER)
    first = _run(scheduler, optimizer, 7)
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    assert set(state["scheduler"]) == {"base_lrs", "last_epoch"}
    assert state["scheduler"] == {"base_lrs": [0.5, 0.05], "last_epoch": 7}

    resumed_optimizer = _optimizer()
    resumed = LRMultiplier(resumed_optimizer, _warm_steps(), max_iter=MAX_ITER)
    resumed_optimizer.load_state_dict(state["optimizer"])
    resumed.load_state_dict(state["scheduler"])
    assert [g["lr"] for g in resumed_optimizer.param_groups] == pytest.approx(reference[7])
    combined = first + _run(resumed, resumed_optimizer, 63)
    assert [lr for lrs in combined for lr in lrs] == pytest.approx(
        [lr for lrs in reference for lr in lrs]
    )


def test_lr_multiplier_argument_errors():
    with pytest.raises(
        TypeError, match=r"LRMultiplier needs an fvcore ParamScheduler as multiplier, got function"
    ):
        LRMultiplier(_optimizer(), lambda where: 1.0, max_iter=10)
    with pytest.raises(ValueError, match=r"max_iter must be positive, got 0"):
        LRMultiplier(_optimizer(), ConstantParamScheduler(1.0), max_iter=0)
