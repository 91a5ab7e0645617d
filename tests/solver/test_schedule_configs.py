"""configs/common/coco_schedule.py and the schedule factories: absolute, override-proof milestones."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from detrex_ext.config import LazyConfig, get_config, instantiate
from detrex_ext.solver import LRMultiplier
from detrex_ext.solver.lr_schedule_configs import (
    constant_lr_scheduler,
    cosine_lr_scheduler,
    linear_lr_scheduler,
    multistep_lr_scheduler,
    polynomial_lr_scheduler,
)


def _experiment(schedule_name: str, max_iter: int):
    cfg = OmegaConf.create(
        {
            "train": get_config("common/train.py").train,
            "lr_multiplier": get_config("common/coco_schedule.py")[schedule_name],
        },
        flags={"allow_objects": True},
    )
    cfg.train.max_iter = max_iter
    return cfg


def _values(cfg, iterations):
    multiplier = instantiate(cfg.lr_multiplier)
    return [multiplier(i / cfg.train.max_iter) for i in iterations]


def test_1x_schedule_by_hand():
    cfg = _experiment("lr_multiplier_1x", 90000)
    assert _values(cfg, [0, 500, 1000, 59999, 60000, 79999, 80000, 89999]) == pytest.approx(
        [0.001, 0.5005, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    )


def test_milestones_do_not_move_when_max_iter_is_overridden():
    cfg = _experiment("lr_multiplier_1x", 90000)
    LazyConfig.apply_overrides(cfg, ["train.max_iter=120000"])
    # fvcore's scale-invariant milestones would drop at 80000 and 106667 here
    assert _values(cfg, [500, 59999, 60000, 79999, 80000, 119999]) == pytest.approx(
        [0.5005, 1.0, 0.1, 0.1, 0.01, 0.01]
    )


def test_long_schedules_drop_before_the_end():
    cfg = _experiment("lr_multiplier_3x", 270000)
    assert _values(cfg, [209999, 210000, 249999, 250000]) == pytest.approx([1.0, 0.1, 0.1, 0.01])
    cfg = _experiment("lr_multiplier_2x", 180000)
    assert _values(cfg, [119999, 120000, 160000]) == pytest.approx([1.0, 0.1, 0.01])


def test_epoch_schedules():
    cfg = _experiment("lr_multiplier_50ep", 375000)
    assert _values(cfg, [0, 299999, 300000, 374999]) == pytest.approx([1.0, 1.0, 0.1, 0.1])
    cfg = _experiment("lr_multiplier_12ep_warmup", 90000)
    # 1e-3 epochs * 7500 = 7.5 -> 8 warmup iterations; x0.1 at epoch 11
    assert _values(cfg, [0, 4, 8, 82499, 82500]) == pytest.approx([0.001, 0.5005, 1.0, 1.0, 0.1])


def test_a_shortened_run_still_builds():
    cfg = _experiment("lr_multiplier_50ep_warmup", 375000)
    LazyConfig.apply_overrides(cfg, ["train.max_iter=20"])
    assert _values(cfg, [0, 19]) == pytest.approx([0.001, 1.0])


def _with_train(schedule, max_iter: int = 100):
    return OmegaConf.create(
        {"train": {"max_iter": max_iter}, "lr_multiplier": schedule}, flags={"allow_objects": True}
    )


def test_factories_by_hand():
    def at(schedule, iteration):
        return _values(_with_train(schedule), [iteration])[0]

    assert at(cosine_lr_scheduler(start_value=1.0, end_value=0.0), 50) == pytest.approx(0.5)
    assert at(linear_lr_scheduler(start_value=1.0, end_value=0.0), 25) == pytest.approx(0.75)
    assert at(polynomial_lr_scheduler(power=0.9), 50) == pytest.approx(0.5**0.9)
    assert at(
        constant_lr_scheduler(value=0.3, warmup_steps=10, warmup_factor=0.5), 0
    ) == pytest.approx(0.15)
    assert at(
        constant_lr_scheduler(value=0.3, warmup_steps=10, warmup_factor=0.5), 10
    ) == pytest.approx(0.3)


def test_multistep_factory_as_mask_dino_uses_it(tmp_path):
    schedule = multistep_lr_scheduler(
        values=[1.0, 0.1, 0.01], milestones=[327778, 355092], warmup_steps=10, warmup_factor=1.0
    )
    cfg = _with_train(schedule, 368750)
    LazyConfig.save(cfg, tmp_path / "sched.yaml")  # the schedule survives a config.yaml round trip
    cfg = LazyConfig.load(tmp_path / "sched.yaml")
    assert _values(cfg, [0, 5, 327777, 327778, 355092]) == pytest.approx([1.0, 1.0, 1.0, 0.1, 0.01])
    # one key moves both the warmup's and the steps' notion of the run length
    LazyConfig.apply_overrides(cfg, ["lr_multiplier.max_iter=400000"])
    assert cfg.lr_multiplier.scheduler.num_updates == 400000
    # and LRMultiplier drives an optimizer with it
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    scheduler = LRMultiplier(
        optimizer, instantiate(cfg.lr_multiplier), max_iter=400000, last_iter=-1
    )
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    scheduler.last_epoch = 355091
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-6)
