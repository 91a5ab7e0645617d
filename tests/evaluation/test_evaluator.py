"""Evaluator protocol, inference_on_dataset and result printing."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from detrex_ext.evaluation import (
    DatasetEvaluator,
    DatasetEvaluators,
    flatten_results_dict,
    inference_context,
    inference_on_dataset,
    print_csv_format,
    verify_results,
)


class _Doubler(nn.Module):
    """Returns 2*x for every input and records its mode and grad state."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, batch):
        self.seen.append((self.training, torch.is_grad_enabled()))
        return [{"y": self.scale * d["x"]} for d in batch]


class _SumEvaluator(DatasetEvaluator):
    def __init__(self, task: str = "sum"):
        self.task = task
        self.calls: list[str] = []

    def reset(self):
        self.calls.append("reset")
        self.total = 0.0
        self.count = 0

    def process(self, inputs, outputs):
        self.calls.append("process")
        for inp, out in zip(inputs, outputs):
            assert out["y"].item() == 2 * inp["x"].item()
            self.total += out["y"].item()
            self.count += 1

    def evaluate(self):
        self.calls.append("evaluate")
        return {self.task: {"total": self.total, "count": self.count}}


def _loader(num_batches: int, batch_size: int = 2):
    return [
        [{"x": torch.tensor(float(b * batch_size + i))} for i in range(batch_size)]
        for b in range(num_batches)
    ]


def test_inference_on_dataset_runs_in_eval_mode_without_grad_and_restores_mode():
    model = _Doubler().train()
    evaluator = _SumEvaluator()
    events = []
    callbacks = {name: (lambda n=name: events.append(n)) for name in ("on_start", "on_end")}
    results = inference_on_dataset(model, _loader(7), evaluator, callbacks=callbacks)
    assert results == {"sum": {"total": 2.0 * sum(range(14)), "count": 14}}
    assert model.seen == [(False, False)] * 7
    assert model.training  # restored
    assert evaluator.calls == ["reset"] + ["process"] * 7 + ["evaluate"]
    assert events == ["on_start", "on_end"]
    with pytest.raises(KeyError, match="on_begin"):
        inference_on_dataset(model, _loader(1), None, callbacks={"on_begin": lambda: None})


def test_inference_on_dataset_accepts_list_none_and_plain_callables():
    results = inference_on_dataset(_Doubler(), _loader(3), [_SumEvaluator("a"), _SumEvaluator("b")])
    assert results["a"]["count"] == results["b"]["count"] == 6
    assert inference_on_dataset(_Doubler(), _loader(2), None) == {}
    # a plain function and a generator loader without __len__
    plain = inference_on_dataset(
        lambda batch: [{"y": 2 * d["x"]} for d in batch], iter(_loader(2)), _SumEvaluator()
    )
    assert plain["sum"]["total"] == 2.0 * sum(range(4))


def test_dataset_evaluators_refuse_duplicate_tasks():
    evaluators = DatasetEvaluators([_SumEvaluator("x"), _SumEvaluator("x")])
    evaluators.reset()
    with pytest.raises(KeyError, match="same task 'x'"):
        evaluators.evaluate()


def test_inference_context_restores_mode_on_error():
    model = nn.Linear(2, 2).train()
    with pytest.raises(RuntimeError):
        with inference_context(model):
            assert not model.training
            raise RuntimeError("boom")
    assert model.training


def test_print_csv_format_and_flatten(caplog):
    results = {"bbox": {"AP": 50.0, "AP50": 75.12345, "AP-cat": 1.0}, "loss": 3}
    with caplog.at_level(logging.INFO, logger="detrex_ext.evaluation.testing"):
        print_csv_format(results)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "copypaste: Task: bbox",
        "copypaste: AP,AP50",
        "copypaste: 50.0000,75.1235",
        "copypaste: loss=3",
    ]
    flat = flatten_results_dict({"a": {"b": {"c": 1}, "d": 2}, "e": 3})
    assert flat == {"a/b/c": 1, "a/d": 2, "e": 3}
    assert verify_results(results, [("bbox", "AP", 50.5, 1.0)])
    assert not verify_results(results, [("bbox", "AP", 52.0, 1.0)])
    assert not verify_results(results, [("segm", "AP", 50.0, 1.0)])
