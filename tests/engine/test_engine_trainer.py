"""Trainer and hooks in-process on the tiny task: call order, hook timing, AMP, accumulation,
clipping, non-finite losses, EMA and in-process resume (including the fp16 grad scaler)."""

from __future__ import annotations

import argparse
import json
import math
import time

import pytest
import torch
from engine_helpers import TINY_CONFIG
from engine_tiny_task import TinyRegressor, TinyTrainLoader
from fvcore.common.param_scheduler import MultiStepParamScheduler

from detrex_ext.checkpoint import DetectionCheckpointer
from detrex_ext.config import LazyConfig
from detrex_ext.engine import Trainer, hooks
from detrex_ext.engine.ema import (
    EMAHook,
    EMAState,
    apply_model_ema_and_restore,
    may_build_model_ema,
)
from detrex_ext.engine.runner import do_train
from detrex_ext.solver import WarmupParamScheduler

pytestmark = pytest.mark.usefixtures("one_thread")


def _trainer(model=None, *, batch_size=4, seed=0, **kwargs) -> Trainer:
    model = model if model is not None else TinyRegressor(dropout=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = TinyTrainLoader(batch_size=batch_size, seed=seed)
    return Trainer(model, loader, optimizer, **kwargs)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_call_order_and_after_backward_sees_grads_before_step() -> None:
    trainer = _trainer()
    calls: list[tuple[str, int]] = []

    class Recorder(hooks.HookBase):
        def before_train(self):
            calls.append(("before_train", self.trainer.iter))

        def before_step(self):
            calls.append(("before_step", self.trainer.iter))
            self.weights = _weights(self.trainer.model)

        def after_backward(self):
            calls.append(("after_backward", self.trainer.iter))
            # gradients exist, the optimizer has not stepped yet
            assert all(p.grad is not None for p in self.trainer.model.parameters())
            assert all(
                torch.equal(v, self.weights[k]) for k, v in self.trainer.model.state_dict().items()
            )

        def after_step(self):
            calls.append(("after_step", self.trainer.iter))

        def after_train(self):
            calls.append(("after_train", self.trainer.iter))

    trainer.register_hooks([None, Recorder()])
    trainer.train(3, 5)
    expected = [("before_train", 3)]
    for i in (3, 4):
        expected += [("before_step", i), ("after_backward", i), ("after_step", i)]
    expected += [("after_train", 5)]  # a finished run reports iter == max_iter
    assert calls == expected


def test_do_train_hook_order_and_timing(tmp_path) -> None:
    """detrex's hook order, and when checkpoints, evaluations and writes happen (0-based i):
    checkpoint at (i+1) % 3 == 0 plus model_final; eval at (i+1) % 3 == 0 except the last
    iteration, plus once after training; writes every 3 iterations, at the last one and after.
    The writers are flushed before each checkpoint, so an evaluation at a checkpoint iteration
    gets a metrics line of its own."""
    cfg = LazyConfig.load(str(TINY_CONFIG))
    overrides = [
        f"train.output_dir={tmp_path}",
        "train.max_iter=7",
        "train.checkpointer.period=3",
        "train.eval_period=3",
        "train.log_period=3",
    ]
    cfg = LazyConfig.apply_overrides(cfg, overrides)
    trainer = do_train(argparse.Namespace(resume=False), cfg)

    assert trainer.clip_grad_params == {"max_norm": 1.0, "norm_type": 2}  # tiny_config.py
    assert [type(h).__name__ for h in trainer._hooks] == [
        "IterationTimer",
        "EMAHook",
        "LRScheduler",
        "PeriodicCheckpointer",
        "EvalHook",
        "PeriodicWriter",
    ]
    checkpoints = sorted(p.name for p in tmp_path.glob("*.pth"))
    assert checkpoints == ["model_0000002.pth", "model_0000005.pth", "model_final.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    lines = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [2, 2, 5, 5, 6, 7]
    evaluated = [line["iteration"] for line in lines if "tiny/mse" in line]
    assert evaluated == [2, 5, 7]
    trained = [line["iteration"] for line in lines if "total_loss" in line]
    assert trained == [2, 5, 6]
    assert all("tiny_ema/mse" in line for line in lines if "tiny/mse" in line)
    assert lines[-1]["tiny/count"] == 10.0
    assert "total_loss" in lines[0] and "lr" in lines[0]


def test_metrics_of_a_checkpointed_iteration_are_written_before_its_checkpoint(tmp_path) -> None:
    """A run killed right after a save resumes after that iteration and never writes its metrics
    again, so they must be on disk before the checkpoint is."""
    from detrex_ext.utils.events import get_event_storage
    from detrex_ext.utils.writers import EventWriter

    writes: list[tuple[int, list[str]]] = []

    class Recorder(EventWriter):
        def write(self) -> None:
            writes.append(
                (get_event_storage().iter, sorted(p.name for p in tmp_path.glob("*.pth")))
            )

    trainer = _trainer()
    checkpointer = DetectionCheckpointer(trainer.model, str(tmp_path), trainer=trainer)
    trainer.register_hooks(
        [
            hooks.PeriodicCheckpointer(checkpointer, period=3, max_iter=None),
            hooks.PeriodicWriter([Recorder()], period=100),
        ]
    )
    trainer.train(0, 7)
    # the checkpointer flushes before its saves at 2 and 5 and before model_final at 6 (the
    # writer's own writes at the last iteration and after training come once the file exists)
    assert writes[:3] == [
        (2, []),
        (5, ["model_0000002.pth"]),
        (6, ["model_0000002.pth", "model_0000005.pth"]),
    ]
    assert [w[0] for w in writes] == [2, 5, 6, 6, 7]


def test_lr_is_logged_before_each_step_and_follows_the_schedule() -> None:
    trainer = _trainer()
    schedule = WarmupParamScheduler(
        MultiStepParamScheduler([1.0, 0.1], milestones=[6], num_updates=10), 0.5, 0.2
    )
    trainer.register_hooks([hooks.LRScheduler(scheduler=schedule)])
    trainer.train(0, 10)
    logged = dict((int(i), v) for v, i in trainer.storage.history("lr").values())
    # warmup: linear from 0.5 at i=0 to 1.0 at i=2 (0.2 of 10 iterations); 0.1 from i=6
    expected = {i: 0.05 * schedule(i / 10) for i in range(10)}
    assert expected[0] == pytest.approx(0.025) and expected[1] == pytest.approx(0.0375)
    assert expected[7] == pytest.approx(0.005)
    assert logged == pytest.approx(expected)


def test_bf16_autocast_on_cpu_without_grad_scaler() -> None:
    model = TinyRegressor(dropout=0.0)
    trainer = _trainer(model, amp_enabled=True, amp_dtype="bf16")
    assert trainer.grad_scaler is None
    trainer.train(0, 12)
    assert model.last_hidden_dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert sum(losses[-3:]) < 0.7 * sum(losses[:3])


def test_fp16_uses_grad_scaler_and_resume_restores_it(tmp_path) -> None:
    """fp16 gets a GradScaler; a checkpoint restores its scale, the optimizer state and the
    iteration, so the continued run equals an uninterrupted one."""

    def build():
        torch.manual_seed(0)
        model = TinyRegressor(dropout=0.1)
        trainer = _trainer(model, amp_enabled=True, amp_dtype="fp16", iteration_seed=5)
        trainer.grad_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**20, growth_interval=3)
        return model, trainer

    model_a, full = build()
    full.train(0, 8)
    assert full.grad_scaler.get_scale() != 2.0**20  # overflow backoffs and growth happened

    model_b, first = build()
    checkpointer = DetectionCheckpointer(model_b, str(tmp_path), trainer=first)
    first.register_hooks([hooks.PeriodicCheckpointer(checkpointer, period=4, max_iter=None)])
    first.train(0, 4)
    saved_scale = first.grad_scaler.get_scale()

    model_c, second = build()
    checkpointer = DetectionCheckpointer(model_c, str(tmp_path), trainer=second)
    checkpointer.resume_or_load("", resume=True)
    assert second.iter == 3 and second.grad_scaler.get_scale() == saved_scale
    second.train(second.iter + 1, 8)
    assert second.grad_scaler.get_scale() == full.grad_scaler.get_scale()
    for key, value in model_a.state_dict().items():
        assert torch.equal(value, model_c.state_dict()[key]), key


def test_gradient_accumulation_matches_one_big_batch() -> None:
    torch.manual_seed(0)
    big = TinyRegressor(dropout=0.0)
    small = TinyRegressor(dropout=0.0)
    small.load_state_dict(big.state_dict())
    one_step = _trainer(big, batch_size=4)
    accumulated = _trainer(small, batch_size=2, grad_accum_steps=2)
    one_step.train(0, 5)
    accumulated.train(0, 5)
    for key, value in big.state_dict().items():
        torch.testing.assert_close(small.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    # the logged loss is the mean over the accumulated batches, i.e. the big batch's loss
    big_losses = [v for v, _ in one_step.storage.history("loss_mse").values()]
    small_losses = [v for v, _ in accumulated.storage.history("loss_mse").values()]
    assert small_losses == pytest.approx(big_losses, rel=1e-5)
    assert accumulated.data_loader.batches_yielded == 10


def test_gradient_clipping_bounds_the_update() -> None:
    torch.manual_seed(0)
    model = TinyRegressor(dropout=0.0)
    before = _weights(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    trainer = Trainer(
        model, TinyTrainLoader(), optimizer, clip_grad_params=dict(max_norm=0.01, norm_type=2)
    )
    trainer.train(0, 1)
    step = torch.cat([(before[k] - v).flatten() for k, v in model.state_dict().items()])
    # plain SGD with lr 1: the update is the clipped gradient, whose norm is max_norm
    assert step.norm().item() == pytest.approx(0.01, rel=1e-4)
    assert trainer.storage.history("grad_norm").latest() > 0.01


def test_non_finite_loss_names_the_term_and_stops_before_the_step() -> None:
    model = TinyRegressor(dropout=0.0, nan_term_at_iter=3)
    trainer = _trainer(model)
    snapshots = {}
    trainer.register_hooks(
        [hooks.CallbackHook(after_step=lambda t: snapshots.update({t.iter: _weights(t.model)}))]
    )
    with pytest.raises(FloatingPointError) as error:
        trainer.train(0, 10)
    message = str(error.value)
    assert "'loss_l1'" in message and "iteration=3" in message and "loss_mse=" in message
    assert "'loss_mse'" not in message  # only the bad term is blamed
    assert trainer.iter == 3
    for key, value in model.state_dict().items():  # weights are those after iteration 2
        assert torch.equal(value, snapshots[2][key])


def test_ema_follows_the_recurrence_and_swaps_weights_for_evaluation() -> None:
    torch.manual_seed(0)
    model = TinyRegressor(dropout=0.0)
    may_build_model_ema(LazyConfig.apply_overrides(_ema_cfg(), []), model)
    initial = _weights(model)
    trainer = _trainer(model)
    history = []
    trainer.register_hooks(
        [
            EMAHook(model, decay=0.8),
            hooks.CallbackHook(after_step=lambda t: history.append(_weights(t.model))),
        ]
    )
    trainer.train(0, 6)
    expected = {k: v.clone() for k, v in initial.items()}
    for weights in history:
        for key in expected:
            expected[key] = 0.8 * expected[key] + 0.2 * weights[key]
    for key, value in expected.items():
        torch.testing.assert_close(model.ema_state.state[key], value, rtol=1e-6, atol=1e-7)
    trained = _weights(model)
    with apply_model_ema_and_restore(model):
        for key, value in model.state_dict().items():
            assert torch.equal(value, model.ema_state.state[key])
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained[key])
    assert not torch.equal(trained["fc1.weight"], model.ema_state.state["fc1.weight"])


def _ema_cfg():
    from omegaconf import OmegaConf

    return OmegaConf.create({"train": {"model_ema": {"enabled": True}}})


def test_ema_state_round_trips_through_a_checkpoint(tmp_path) -> None:
    model = TinyRegressor()
    state = EMAState.from_model(model)
    state.state["fc1.weight"] += 1.0
    DetectionCheckpointer(model, str(tmp_path), ema_state=state).save("m")
    loaded = EMAState()
    DetectionCheckpointer(TinyRegressor(), str(tmp_path), ema_state=loaded).load(
        str(tmp_path / "m.pth")
    )
    assert torch.equal(loaded.state["fc1.weight"], state.state["fc1.weight"])
    assert math.isclose(
        float((loaded.state["fc1.weight"] - model.fc1.weight.detach()).mean()), 1.0, rel_tol=1e-6
    )


def test_do_train_with_wandb_offline(tmp_path, monkeypatch) -> None:
    """train.wandb.enabled with mode=offline: the run records the resolved config and losses."""
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    cfg = LazyConfig.apply_overrides(
        LazyConfig.load(str(TINY_CONFIG)),
        [
            f"train.output_dir={tmp_path}",
            "train.max_iter=2",
            "train.wandb.enabled=True",
            "train.wandb.params.mode=offline",
        ],
    )
    do_train(argparse.Namespace(resume=False), cfg)
    runs = list((tmp_path / "wandb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    deadline = time.monotonic() + 30
    while b"loss_mse" not in runs[0].read_bytes() and time.monotonic() < deadline:
        time.sleep(0.1)
    wandb.teardown()
    data = runs[0].read_bytes()
    assert b"loss_mse" in data and b"engine_tiny_task.TinyRegressor" in data
