"""tools/benchmark.py --backend: the backends are timed in alternation with the stated threads
on the same image, and unknown backends are refused before anything is built."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from detrex_ext.export.benchmark import benchmark_backends, format_backend_table, parse_backends

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_unknown_backend_is_refused():
    assert parse_backends("eager, onnxruntime") == ["eager", "onnxruntime"]
    with pytest.raises(ValueError, match="eager, onnxruntime, torch_export"):
        parse_backends("eager,tensorrt")
    out = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--config-file", "x", "--backend", "tensorrt"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and "unknown backend(s) ['tensorrt']" in out.stderr


def test_backends_are_timed_in_alternation(r50_panoptic_export):
    prepared, path = r50_panoptic_export["grid_sample"]
    figures = benchmark_backends(
        prepared.model,
        ["eager", "onnxruntime"],
        height=64,
        width=96,
        threads=1,
        warmup=0,
        repeats=3,
        onnx_files={"grid_sample": path},
    )
    assert list(figures["backends"]) == ["eager", "onnxruntime (grid_sample)"]
    assert figures["threads"] == 1 and figures["size"] == [64, 96] and figures["batch"] == 1
    for result in figures["backends"].values():
        assert len(result["runs_ms"]) == 3 and min(result["runs_ms"]) > 0
        assert result["min_ms"] <= result["median_ms"]
    ratio = figures["speedup_vs_eager"]["onnxruntime (grid_sample)"]
    eager_ms = figures["backends"]["eager"]["median_ms"]
    onnx_ms = figures["backends"]["onnxruntime (grid_sample)"]["median_ms"]
    assert ratio == pytest.approx(eager_ms / onnx_ms)
    table = format_backend_table(figures)
    assert "64x96, CPU, 1 threads" in table and f"{ratio:.2f}x" in table
