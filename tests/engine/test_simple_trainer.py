"""detectron2's SimpleTrainer / AMPTrainer and hooks.BestCheckpointer: the update rule by hand,
metric writing (gather period, async, non-finite losses), state, AMP on CPU, and the best
checkpoint by a metric."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from detrex_ext.checkpoint import DetectionCheckpointer
from detrex_ext.engine import AMPTrainer, SimpleTrainer, hooks


class _Scalar(nn.Module):
    """loss = (w * x - y)^2 and |w| as two terms; gradient 2 x (w x - y) + sign(w)."""

    def __init__(self, w: float = 1.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, batch):
        x, y = batch
        return {"loss_fit": (self.w * x - y) ** 2, "loss_reg": self.w.abs()}


def _loader(pairs):
    while True:
        yield from ((torch.tensor(x), torch.tensor(y)) for x, y in pairs)


def test_simple_trainer_steps_by_hand_and_writes_metrics():
    model = _Scalar(1.0)
    trainer = SimpleTrainer(model, _loader([(1.0, 3.0), (2.0, 0.0)]), torch.optim.SGD(
        model.parameters(), lr=0.1))  # fmt: skip
    trainer.train(0, 2)
    # step 0: x=1, y=3, w=1: grad = 2*1*(1-3) + 1 = -3 -> w = 1.3
    # step 1: x=2, y=0, w=1.3: grad = 2*2*(2.6) + 1 = 11.4 -> w = 1.3 - 1.14 = 0.16
    assert model.w.item() == pytest.approx(0.16)
    storage = trainer.storage
    assert storage.history("loss_fit").values() == [(4.0, 0), (pytest.approx(2.6**2), 1)]
    assert storage.history("total_loss").latest() == pytest.approx(2.6**2 + 1.3)
    assert {"data_time", "rank_data_time"} <= set(storage.histories())
    assert set(trainer.state_dict()) >= {"iteration", "optimizer"}


def test_gather_period_zero_grad_order_async_and_tensor_losses():
    model = _Scalar(1.0)
    trainer = SimpleTrainer(
        model,
        _loader([(1.0, 3.0)]),
        torch.optim.SGD(model.parameters(), lr=0.1),
        gather_metric_period=2,
        zero_grad_before_forward=True,
        async_write_metrics=True,
    )
    trainer.train(0, 4)
    assert [i for _, i in trainer.storage.history("total_loss").values()] == [1, 3]

    class _Total(_Scalar):
        def forward(self, batch):
            return sum(super().forward(batch).values())

    single = SimpleTrainer(_Total(), _loader([(1.0, 3.0)]), torch.optim.SGD(
        _Scalar().parameters(), lr=0.0))  # fmt: skip
    single.train(0, 1)
    assert "total_loss" in single.storage.histories()
    assert "loss_fit" not in single.storage.histories()


def test_non_finite_loss_stops_training():
    model = _Scalar(1.0)
    trainer = SimpleTrainer(model, _loader([(float("nan"), 0.0)]), torch.optim.SGD(
        model.parameters(), lr=0.1))  # fmt: skip
    with pytest.raises(FloatingPointError, match="iteration=0"):
        trainer.train(0, 1)


def test_a_detrex_style_subclass_works():
    """detrex's train_net.py subclasses SimpleTrainer with keyword arguments and calls its
    private helpers; the same code runs here."""

    class DetrexTrainer(SimpleTrainer):
        def __init__(self, model, dataloader, optimizer):
            super().__init__(model=model, data_loader=dataloader, optimizer=optimizer)

        def run_step(self):
            data = next(self._data_loader_iter)
            loss_dict = self.model(data)
            losses = sum(loss_dict.values())
            self.optimizer.zero_grad()
            losses.backward()
            self._write_metrics(loss_dict, 0.0)
            self.optimizer.step()

    model = _Scalar(1.0)
    trainer = DetrexTrainer(model, _loader([(1.0, 3.0)]), torch.optim.SGD(model.parameters(), 0.1))
    trainer.train(0, 1)
    assert model.w.item() == pytest.approx(1.3)
    assert trainer.storage.history("total_loss").latest() == pytest.approx(5.0)


def test_amp_trainer_on_cpu_in_bf16_with_scaler_state():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)

    class _Loss(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, batch):
            out = self.inner(batch)
            return {"loss": (out.float() ** 2).mean(), "dtype": torch.tensor(0.0) + (
                out.dtype == torch.bfloat16)}  # fmt: skip

    wrapper = _Loss()
    batches = iter([torch.randn(8, 4) for _ in range(3)])
    before = model.weight.detach().clone()
    trainer = AMPTrainer(
        wrapper,
        batches,
        torch.optim.SGD(wrapper.parameters(), lr=0.1),
        precision=torch.bfloat16,
        log_grad_scaler=True,
    )
    trainer.train(0, 3)
    assert trainer.storage.history("dtype").latest() == 1.0  # the forward ran in bf16
    assert not torch.equal(model.weight, before)
    assert trainer.storage.history("[metric]grad_scaler").latest() == 65536.0
    state = trainer.state_dict()
    assert set(state) >= {"optimizer", "grad_scaler"}


def _run_with_best_checkpointer(tmp_path, values, mode):
    model = _Scalar(1.0)
    trainer = SimpleTrainer(model, _loader([(1.0, 1.0)]), torch.optim.SGD(
        model.parameters(), lr=0.0))  # fmt: skip
    checkpointer = DetectionCheckpointer(model, str(tmp_path), trainer=trainer)
    results = iter(values)
    trainer.register_hooks(
        [
            hooks.EvalHook(2, lambda: {"bbox": {"AP": next(results)}}),
            hooks.BestCheckpointer(2, checkpointer, "bbox/AP", mode=mode),
        ]
    )
    trainer.train(0, 6)  # evaluations after iterations 1, 3 and at the end (5)
    best = trainer._hooks[1]
    return best, checkpointer


def test_best_checkpointer_saves_on_improvement(tmp_path):
    best, checkpointer = _run_with_best_checkpointer(tmp_path, [2.0, 1.0, 3.0], "max")
    assert (best.best_metric, best.best_iter) == (3.0, 6)  # the final evaluation, at max_iter
    saved = torch.load(tmp_path / "model_best.pth", weights_only=True)
    assert saved["iteration"] == 6
    best, _ = _run_with_best_checkpointer(tmp_path / "min", [2.0, 1.0, 3.0], "min")
    assert (best.best_metric, best.best_iter) == (1.0, 3)
    best, _ = _run_with_best_checkpointer(tmp_path / "nan", [math.nan, 1.0, 0.5], "max")
    assert (best.best_metric, best.best_iter) == (1.0, 3)  # NaN never counts as best
    with pytest.raises(ValueError, match="'max' or 'min'"):
        hooks.BestCheckpointer(2, checkpointer, "bbox/AP", mode="best")


def test_best_checkpointer_warns_without_the_metric(tmp_path, caplog):
    best, _ = _run_with_best_checkpointer(tmp_path, [1.0, 2.0, 3.0], "max")
    best._val_metric = "segm/AP"
    best._best_checking()
    assert "'segm/AP' was not put in the event storage" in caplog.text
