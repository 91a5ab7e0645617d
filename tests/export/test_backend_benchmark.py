"""tools/benchmark.py --backend: every backend computes the same final predictions and gets timed
in alternation with the stated threads; unknown backends are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from detrex_ext.export.benchmark import format_backend_table, parse_backends

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SMALL_DEMO = [
    "model.num_queries=10",
    "model.sem_seg_head.pixel_decoder.transformer_enc_layers=1",
    "model.sem_seg_head.transformer_predictor.dec_layers=1",
]


def test_unknown_backend_is_refused():
    assert parse_backends("eager, onnxruntime") == ["eager", "onnxruntime"]
    with pytest.raises(ValueError, match="eager, onnxruntime, torch_export"):
        parse_backends("eager,tensorrt")


def test_all_backends_are_timed_in_alternation(tmp_path):
    output = tmp_path / "bench.json"
    command = [
        sys.executable,
        "tools/benchmark.py",
        "--config-file",
        "projects/maskdino/configs/maskdino_demo_synthetic.py",
        "--device",
        "cpu",
        "--backend",
        "eager,onnxruntime,torch_export",
        "--height",
        "64",
        "--width",
        "64",
        "--threads",
        "1",
        "--warmup",
        "0",
        "--repeats",
        "2",
        "--output",
        str(output),
        *SMALL_DEMO,
    ]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures = json.loads(output.read_text())["backends"]
    names = ["eager", "onnxruntime (grid_sample)", "torch_export (grid_sample)"]
    assert list(figures["backends"]) == names
    assert figures["threads"] == 1 and figures["size"] == [64, 64]
    for name in names:
        runs = figures["backends"][name]["runs_ms"]
        assert len(runs) == 2 and all(ms > 0 for ms in runs)
    assert figures["speedup_vs_eager"]["eager"] == 1.0
    assert "1 threads" in proc.stdout and "onnxruntime (grid_sample)" in proc.stdout
    assert format_backend_table(figures) in proc.stdout
