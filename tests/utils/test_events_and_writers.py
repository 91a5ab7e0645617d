"""EventStorage semantics and the writers: metrics.json lines, the console line with ETA,
TensorBoard events read back, wandb in offline mode."""

from __future__ import annotations

import glob
import json
import logging
import time
from pathlib import Path

import pytest

from detrex_ext.utils.events import EventStorage, get_event_storage, has_event_storage
from detrex_ext.utils.writers import (
    CommonMetricPrinter,
    JSONWriter,
    TensorboardXWriter,
    WandbWriter,
)


def test_storage_smoothing_latest_and_scopes() -> None:
    with pytest.raises(RuntimeError, match="EventStorage"):
        get_event_storage()
    with EventStorage(start_iter=3) as storage:
        assert get_event_storage() is storage
        for i, value in enumerate([5.0, 1.0, 3.0, 100.0]):
            storage.iter = 3 + i
            storage.put_scalar("loss", value)
        storage.put_scalar("bbox/AP", 42.0, smoothing_hint=False)
        with storage.name_scope("val"):
            storage.put_scalar("acc", 0.5, smoothing_hint=False)
        smoothed = storage.latest_with_smoothing_hint(window_size=3)
        assert smoothed["loss"] == (3.0, 6)  # median of 1, 3, 100
        assert storage.latest()["loss"] == (100.0, 6)
        assert smoothed["bbox/AP"] == (42.0, 6) and "val/acc" in smoothed
        with pytest.raises(ValueError, match="smoothing_hint"):
            storage.put_scalar("loss", 1.0, smoothing_hint=False)
        with pytest.raises(KeyError, match="known"):
            storage.history("nope")


def test_history_state_round_trip_continues_medians() -> None:
    with EventStorage() as first:
        for i, value in enumerate([4.0, 8.0, 6.0]):
            first.iter = i
            first.put_scalar("loss", value)
        first.put_scalar("AP", 1.0, smoothing_hint=False)
        state = first.history_state()
    assert set(state) == {"loss"}  # only smoothed scalars are carried over
    with EventStorage(start_iter=3) as second:
        second.load_history_state(state)
        assert second.latest() == {}  # nothing new for the writers yet
        second.iter = 3
        second.put_scalar("loss", 2.0)
        assert second.history("loss").median(4) == 5.0  # median of 4, 8, 6, 2


def test_json_writer_writes_one_object_per_new_iteration(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    with EventStorage() as storage:
        writer = JSONWriter(str(path), window_size=2)
        for i in range(3):
            storage.iter = i
            storage.put_scalar("loss", float(i))
            storage.put_scalar("lr", 0.1 * (i + 1), smoothing_hint=False)
        writer.write()
        writer.write()  # nothing new: nothing written
        storage.iter = 3
        storage.put_scalar("bbox/AP", 50.0, smoothing_hint=False)
        writer.write()
        writer.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [
        {"iteration": 2, "loss": 1.5, "lr": pytest.approx(0.3)},  # median of the last 2 losses
        {"iteration": 3, "bbox/AP": 50.0},
    ]


def test_json_writer_writes_values_put_for_an_already_written_iteration(tmp_path: Path) -> None:
    """Evaluation results put after the iteration's line went out (a flush before a checkpoint)
    get a line of their own; nothing is written twice."""
    path = tmp_path / "metrics.json"
    with EventStorage(start_iter=4) as storage:
        writer = JSONWriter(str(path), window_size=1)
        storage.put_scalar("loss", 2.0)
        writer.write()
        storage.put_scalar("segm/AP", 30.0, smoothing_hint=False)
        writer.write()
        writer.write()
        writer.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [{"iteration": 4, "loss": 2.0}, {"iteration": 4, "segm/AP": 30.0}]


def test_console_line_is_printed_once_per_iteration(caplog) -> None:
    with EventStorage(start_iter=4) as storage:
        printer = CommonMetricPrinter(max_iter=10)
        storage.put_scalar("total_loss", 1.0)
        with caplog.at_level(logging.INFO, logger="detrex_ext.utils.writers"):
            printer.write()
            printer.write()
            storage.iter = 5
            printer.write()
    assert ["iter: 4" in r.getMessage() for r in caplog.records] == [True, False]


def test_console_line_has_eta_losses_and_lr(caplog) -> None:
    with EventStorage() as storage:
        printer = CommonMetricPrinter(max_iter=100, window_size=20)
        for i in range(10):
            storage.iter = i
            storage.put_scalars(total_loss=1.0 / (i + 1), loss_cls=0.5, time=0.5, data_time=0.1)
            storage.put_scalar("lr", 0.01, smoothing_hint=False)
        with caplog.at_level(logging.INFO, logger="detrex_ext.utils.writers"):
            printer.write()
        eta = storage.latest()["eta_seconds"][0]
    assert eta == pytest.approx(0.5 * (100 - 9 - 1))
    line = caplog.records[-1].getMessage()
    assert "eta: 0:00:45" in line and "iter: 9" in line
    assert "total_loss: 0.1" in line and "loss_cls: 0.5" in line and "lr: 0.01" in line
    assert "time: 0.5000" in line and "data_time: 0.1000" in line


def test_sparse_scalars_are_smoothed_over_iterations_not_values(tmp_path: Path) -> None:
    """detectron2's rule: a scalar put every 10th iteration, with window 20, is the median of the
    values of the last 20 iterations (2 values), not of its last 20 values."""
    path = tmp_path / "metrics.json"
    with EventStorage() as storage:
        writer = JSONWriter(str(path), window_size=20)
        for i in range(0, 101, 10):  # values 0, 1, ..., 10 at iterations 0, 10, ..., 100
            storage.iter = i
            storage.put_scalar("loss_sparse", float(i // 10))
        assert storage.count_samples("loss_sparse", 20) == 2  # iterations 90 and 100
        assert storage.count_samples("loss_sparse", 21) == 3  # 80 > 100 - 21
        assert storage.count_samples("never_put") == 0
        assert storage.latest_with_smoothing_hint(20)["loss_sparse"] == (9.5, 100)
        writer.write()
        writer.close()
    assert json.loads(path.read_text()) == {"iteration": 100, "loss_sparse": 9.5}


def test_storage_step_iteration_and_has_event_storage() -> None:
    assert not has_event_storage()
    with EventStorage(start_iter=7) as storage:
        assert has_event_storage()
        storage.put_scalar("a", 1.0)
        storage.step()
        storage.put_scalar("a", 2.0)
        assert storage.iter == storage.iteration == 8
        assert storage.history("a").values() == [(1.0, 7), (2.0, 8)]
    assert not has_event_storage()


def test_console_line_prints_metric_scalars(caplog) -> None:
    """Scalars named ``[metric]...`` are printed (smoothed) next to the losses, as detectron2."""
    with EventStorage() as storage:
        printer = CommonMetricPrinter(max_iter=100, window_size=2)
        for i, value in enumerate([1.0, 5.0, 3.0]):
            storage.iter = i
            storage.put_scalars(total_loss=1.0, **{"[metric]acc": value})
        with caplog.at_level(logging.INFO, logger="detrex_ext.utils.writers"):
            printer.write()
    assert "[metric]acc: 4" in caplog.records[-1].getMessage()  # median of 5 and 3


def test_tensorboard_events_read_back(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with EventStorage() as storage:
        writer = TensorboardXWriter(str(tmp_path))
        for i in range(4):
            storage.iter = i
            storage.put_scalar("lr", 0.1 * i, smoothing_hint=False)
            writer.write()
        writer.close()
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    events = accumulator.Scalars("lr")
    assert [e.step for e in events] == [0, 1, 2, 3]
    assert [e.value for e in events] == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_wandb_offline_run_needs_no_network(tmp_path: Path, monkeypatch) -> None:
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")  # leave sys.stdout alone inside pytest
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with EventStorage() as storage:
        writer = WandbWriter(
            config={"optimizer": {"lr": 0.123}},
            dir=str(tmp_path),
            project="unit",
            name="offline-check",
            mode="offline",
        )
        for i in range(3):
            storage.iter = i
            storage.put_scalar("loss_mask_probe", 1.0 / (i + 1))
            writer.write()
        writer.close()
    runs = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(runs) == 1
    # wandb's service process may finish flushing the run file just after finish() returns
    deadline = time.monotonic() + 30
    while True:
        data = Path(runs[0]).read_bytes()
        if (b"loss_mask_probe" in data and b"0.123" in data) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    wandb.teardown()  # stop wandb's service process
    assert b"loss_mask_probe" in data and b"0.123" in data
