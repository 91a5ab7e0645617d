"""tools/plot_metrics.py on a detectron2-format metrics.json: grouping, ticks, charts, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tool_helpers import REPO_ROOT, TINY_CONFIG, load_tool

from detrex_ext.utils.visualizer import class_color

plot_metrics = load_tool("plot_metrics")


def _write_metrics(path: Path) -> None:
    """20 training records (lr warms up linearly), an eval record, and a line cut off mid-write."""
    lines = []
    for it in range(19, 400, 20):
        lines.append(
            {
                "iteration": it,
                "total_loss": 10.0 / (1 + it / 50),
                "loss_ce": 2.0 / (1 + it / 50),
                "loss_ce_0": 2.5 / (1 + it / 50),
                "loss_mask_dn": 1.0,
                "lr": 1e-4 * (it + 1) / 400,
                "time": 0.5,
                "data_time": 0.01,
                "eta_seconds": 100.0,
            }
        )
    lines.append({"iteration": 399, "bbox/AP": 12.5, "bbox/AP-person": 30.0, "segm/AP": 10.0})
    path.write_text("\n".join(json.dumps(line) for line in lines) + '\n{"iteration": 41')


def test_read_and_group(tmp_path):
    metrics = tmp_path / "metrics.json"
    _write_metrics(metrics)
    series = plot_metrics.read_metrics(metrics)
    assert len(series["total_loss"]) == 20 and series["bbox/AP"] == [(399.0, 12.5)]
    groups = plot_metrics.group_series(series)
    assert groups == {
        "losses": ["total_loss", "loss_ce"],
        "lr": ["lr"],
        "metrics": ["bbox/AP", "segm/AP"],
        "time": ["data_time", "time"],
    }
    all_losses = plot_metrics.group_series(series, all_losses=True)["losses"]
    assert set(all_losses) == {"total_loss", "loss_ce", "loss_ce_0", "loss_mask_dn"}


def test_ticks_and_smoothing():
    assert plot_metrics.nice_ticks(0, 97) == [0, 20, 40, 60, 80, 100]
    assert plot_metrics.nice_ticks(0.013, 0.051) == [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
    assert plot_metrics.nice_ticks(3.0, 3.0)[0] <= 3.0 <= plot_metrics.nice_ticks(3.0, 3.0)[-1]
    # one evaluation at iteration 1500: the axis is centred on it, not [1500, 3000]
    assert plot_metrics.nice_ticks(1500, 1500) == [1300, 1400, 1500, 1600, 1700]
    assert plot_metrics.nice_ticks(0, 0) == [-1, -0.5, 0, 0.5, 1]
    points = [(0, 1.0), (1, 3.0), (2, 5.0), (3, 7.0)]
    assert plot_metrics.moving_average(points, 2) == [(0, 1.0), (1, 2.0), (2, 4.0), (3, 6.0)]


def test_cli_writes_charts_whose_lines_follow_the_data(tmp_path):
    _write_metrics(tmp_path / "metrics.json")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tools" / "plot_metrics.py"),
            str(tmp_path),
            "--smooth",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    names = {Path(line).name for line in result.stdout.split()}
    assert names == {"losses.png", "lr.png", "metrics.png", "time.png"}

    lr = np.asarray(Image.open(tmp_path / "plots" / "lr.png").convert("RGB"))
    assert lr.shape == (540, 960, 3)
    ys, xs = np.nonzero((lr == class_color(0)).all(axis=-1))
    on_curve = xs > 200  # right of the legend
    # the learning rate rises linearly: further right on the chart means higher up (smaller y)
    assert on_curve.sum() > 300
    assert np.corrcoef(xs[on_curve], ys[on_curve])[0, 1] < -0.99

    loss = np.asarray(Image.open(tmp_path / "plots" / "losses.png").convert("RGB"))
    ys, xs = np.nonzero((loss == class_color(0)).all(axis=-1))
    assert np.corrcoef(xs[xs > 200], ys[xs > 200])[0, 1] > 0.5  # total loss falls


def test_cli_reports_a_missing_file(tmp_path, capsys):
    assert plot_metrics.main([str(tmp_path)]) == 1
    assert "metrics.json does not exist" in capsys.readouterr().err


def test_plots_the_metrics_json_of_a_real_training_run(tmp_path):
    """tools/train_net.py trains the tiny config for 8 iterations (evaluating at 4 and 8)."""
    run = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tools" / "train_net.py"),
            "--config-file",
            str(TINY_CONFIG),
            f"train.output_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    series = plot_metrics.read_metrics(tmp_path / "metrics.json")
    groups = plot_metrics.group_series(series)
    assert groups["losses"] == ["total_loss", "loss_mask"] and groups["lr"] == ["lr"]
    assert {"bbox/AP", "segm/AP", "sem_seg/mIoU"} <= set(groups["metrics"])
    assert not any("-" in key for key in groups["metrics"])  # no per-class entries
    assert len(series["bbox/AP"]) == 2  # evaluated twice
    assert len(series["total_loss"]) == 8

    assert plot_metrics.main([str(tmp_path)]) == 0
    for name in ("losses", "lr", "metrics", "time"):
        image = Image.open(tmp_path / "plots" / f"{name}.png")
        assert image.size == (960, 540)
    lr = np.asarray(Image.open(tmp_path / "plots" / "lr.png").convert("RGB"))
    ys, xs = np.nonzero((lr == class_color(0)).all(axis=-1))
    curve = xs > 200  # right of the legend
    # warm-up, constant, then a 10x step down at iteration 6: the last point is the lowest
    assert ys[curve][np.argmax(xs[curve])] > ys[curve].min()
