#!/usr/bin/env python
"""Plot the losses, learning rate, evaluation metrics and timings of a run from its metrics.json.

    python tools/plot_metrics.py OUTPUT_DIR [--out DIR] [--smooth 20] [--log-y] [--all-losses]

``OUTPUT_DIR/metrics.json`` holds one JSON object per line with an ``iteration`` and scalar values
(detectron2's JSONWriter format). PNG charts are written to ``OUTPUT_DIR/plots`` (or ``--out``):
``losses.png`` (total and final-layer losses; ``--all-losses`` adds the auxiliary and denoising
ones), ``lr.png``, ``metrics.png`` (``task/metric`` values such as ``bbox/AP``, without per-class
entries) and ``time.png``. Drawn with Pillow; matplotlib is not needed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw

from detrex_ext.utils.visualizer import class_color, load_font

logger = logging.getLogger("plot_metrics")

Series = dict[str, list[tuple[float, float]]]  # name -> [(iteration, value)]

_AUX_LOSS = re.compile(r"(_\d+$|_dn|dn_|interm|enc)")


def read_metrics(path: Path) -> Series:
    """All scalar series of a metrics.json file; broken lines (a run killed mid-write) are skipped."""
    series: Series = defaultdict(list)
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s:%d is not valid JSON; skipped", path, number)
                continue
            iteration = record.get("iteration")
            if not isinstance(iteration, (int, float)):
                continue
            for key, value in record.items():
                if key != "iteration" and isinstance(value, (int, float)) and math.isfinite(value):
                    series[key].append((float(iteration), float(value)))
    return dict(series)


def group_series(series: Series, all_losses: bool = False) -> dict[str, list[str]]:
    """Chart name -> series keys: losses, lr, metrics, time."""
    groups: dict[str, list[str]] = {"losses": [], "lr": [], "metrics": [], "time": []}
    for key in sorted(series):
        if "loss" in key:
            if all_losses or key == "total_loss" or not _AUX_LOSS.search(key):
                groups["losses"].append(key)
        elif key == "lr" or key.startswith("lr/") or key.startswith("lr_"):
            groups["lr"].append(key)
        elif "/" in key and "-" not in key:  # task/metric, not per-class "bbox/AP-person"
            groups["metrics"].append(key)
        elif key in ("time", "data_time"):
            groups["time"].append(key)
    if "total_loss" in groups["losses"]:  # first, so it gets the first colour
        groups["losses"].remove("total_loss")
        groups["losses"].insert(0, "total_loss")
    return {name: keys for name, keys in groups.items() if keys}


def moving_average(points: list[tuple[float, float]], window: int) -> list[tuple[float, float]]:
    """Trailing mean of the last ``window`` values (window <= 1 returns the points unchanged)."""
    if window <= 1:
        return points
    smoothed, total = [], 0.0
    for i, (x, y) in enumerate(points):
        total += y
        if i >= window:
            total -= points[i - window][1]
        smoothed.append((x, total / min(i + 1, window)))
    return smoothed


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering [low, high].

    A single value (low == high, e.g. one evaluation) gets a range centred on it.
    """
    if high <= low:
        margin = 0.1 * abs(low) or 1.0
        low, high = low - margin, low + margin
    raw_step = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw_step)
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def _format_tick(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.0e}"
    return f"{value:g}"


class LineChart:
    """A line chart with axes, ticks, grid and legend, drawn with Pillow."""

    def __init__(self, title: str, *, size: tuple[int, int] = (960, 540), log_y: bool = False):
        self.title = title
        self.size = size
        self.log_y = log_y
        self.series: list[tuple[str, list[tuple[float, float]]]] = []

    def add(self, name: str, points: list[tuple[float, float]]) -> None:
        if self.log_y:
            points = [(x, y) for x, y in points if y > 0]
        if points:
            self.series.append((name, points))

    def _y(self, value: float) -> float:
        return math.log10(value) if self.log_y else value

    def render(self) -> Image.Image:
        width, height = self.size
        left, right, top, bottom = 80, 20, 40, 50
        image = Image.new("RGB", self.size, "white")
        draw = ImageDraw.Draw(image)
        font = load_font(13)
        draw.text((left, 12), self.title, fill="black", font=font)
        if not self.series:
            draw.text((left, height // 2), "no data", fill="gray", font=font)
            return image
        xs = [x for _, pts in self.series for x, _ in pts]
        ys = [self._y(y) for _, pts in self.series for _, y in pts]
        x_ticks, y_ticks = nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys))
        x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
        plot_w, plot_h = width - left - right, height - top - bottom

        def to_pixel(x: float, y: float) -> tuple[float, float]:
            return (
                left + (x - x0) / (x1 - x0) * plot_w,
                top + plot_h - (self._y(y) - y0) / (y1 - y0) * plot_h,
            )

        for tick in x_ticks:
            px = left + (tick - x0) / (x1 - x0) * plot_w
            draw.line([(px, top), (px, top + plot_h)], fill=(230, 230, 230))
            label = _format_tick(tick)
            draw.text((px - 3 * len(label), top + plot_h + 6), label, fill="black", font=font)
        for tick in y_ticks:
            py = top + plot_h - (tick - y0) / (y1 - y0) * plot_h
            draw.line([(left, py), (left + plot_w, py)], fill=(230, 230, 230))
            label = _format_tick(10**tick if self.log_y else tick)
            draw.text((4, py - 7), label.rjust(10), fill="black", font=font)
        draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
        draw.text((left + plot_w // 2 - 25, height - 20), "iteration", fill="black", font=font)

        for index, (_, points) in enumerate(self.series):
            pixels = [to_pixel(x, y) for x, y in points]
            if len(pixels) == 1:
                px, py = pixels[0]
                draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=class_color(index))
            else:
                draw.line(pixels, fill=class_color(index), width=2)
        legend_width = 46 + max(int(draw.textlength(name, font=font)) for name, _ in self.series)
        draw.rectangle(
            [left + 4, top + 4, left + legend_width, top + 12 + 16 * len(self.series)],
            fill="white",
            outline=(200, 200, 200),
        )
        for index, (name, _) in enumerate(self.series):
            color = class_color(index)
            legend_y = top + 8 + 16 * index
            draw.line([(left + 10, legend_y + 7), (left + 30, legend_y + 7)], fill=color, width=3)
            draw.text((left + 36, legend_y), name, fill="black", font=font)
        return image


def plot_metrics(
    metrics_file: Path,
    out_dir: Path,
    *,
    smooth: int = 1,
    log_y: bool = False,
    all_losses: bool = False,
) -> list[Path]:
    """Write one PNG per chart group; returns the written paths."""
    series = read_metrics(metrics_file)
    if not series:
        raise ValueError(f"{metrics_file} has no scalar values with an 'iteration'")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for group, keys in group_series(series, all_losses).items():
        chart = LineChart(f"{group} ({metrics_file})", log_y=log_y and group in ("losses", "lr"))
        for key in keys:
            window = smooth if group in ("losses", "time") else 1
            chart.add(key, moving_average(series[key], window))
        path = out_dir / f"{group}.png"
        chart.render().save(path, format="PNG")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "output_dir", type=Path, help="a training output dir, or a metrics.json file"
    )
    parser.add_argument(
        "--out", type=Path, help="where to write the PNGs (default OUTPUT_DIR/plots)"
    )
    parser.add_argument(
        "--smooth", type=int, default=1, help="moving-average window for losses/time"
    )
    parser.add_argument("--log-y", action="store_true", help="log scale for losses and lr")
    parser.add_argument("--all-losses", action="store_true", help="include auxiliary/DN losses")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    source = args.output_dir
    metrics_file = source if source.is_file() else source / "metrics.json"
    if not metrics_file.is_file():
        print(
            f"error: {metrics_file} does not exist (is this a training output directory?)",
            file=sys.stderr,
        )
        return 1
    out_dir = args.out or metrics_file.parent / "plots"
    try:
        written = plot_metrics(
            metrics_file, out_dir, smooth=args.smooth, log_y=args.log_y, all_losses=args.all_losses
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
