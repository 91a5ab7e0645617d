"""tools/demo.py end to end on the tiny config: pictures with drawn predictions, JSON, overrides."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tool_helpers import REPO_ROOT, TINY_CONFIG, half_bright_image, load_tool

demo = load_tool("demo")
H, W = 48, 96


def _read(path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(path).convert("RGB"))


def test_cli_draws_predictions_for_files_and_folders(tmp_path, tiny_weights):
    image = half_bright_image(H, W)
    Image.fromarray(image).save(tmp_path / "a.png")
    folder = tmp_path / "more"
    folder.mkdir()
    Image.fromarray(image).save(folder / "b.png")
    Image.fromarray(image).save(folder / "c.bmp")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tools" / "demo.py"),
            "--config-file",
            str(TINY_CONFIG),
            "--weights",
            str(tiny_weights),
            "--input",
            str(tmp_path / "a.png"),
            str(folder),
            "--output",
            str(out),
            "--score-thresh",
            "0.5",
            "--save-json",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png", "c.png"]
    drawn = _read(out / "a.png")
    assert drawn.shape == image.shape
    # the bright instance (left half) is drawn: its mask pixels are blended with a class colour
    assert (np.abs(drawn[30:44, 4:40].astype(int) - image[30:44, 4:40]).sum(-1) > 30).all()
    # the whole-image instance (score 0.2) is below the threshold: the right half is untouched
    # (below the label of the bright instance, which sits on its box's top-left corner)
    assert (drawn[20:, W // 2 + 3 :] == image[20:, W // 2 + 3 :]).all()
    assert (drawn[:20, 4:40] != image[:20, 4:40]).any()  # the label
    predictions = json.loads((out / "a.json").read_text())
    assert len(predictions) == 1 and predictions[0]["class_id"] == 1
    assert predictions[0]["score"] == pytest.approx(0.9)
    assert predictions[0]["box_xyxy"][0] == 0 and abs(predictions[0]["box_xyxy"][2] - W / 2) <= 2


def test_overrides_after_inputs_are_applied(tmp_path, tiny_weights):
    Image.fromarray(half_bright_image(H, W)).save(tmp_path / "a.png")
    destination = tmp_path / "single.png"
    argv = ["--config-file", str(TINY_CONFIG), "--weights", str(tiny_weights), "--device", "cpu"]
    argv += [
        "--input",
        str(tmp_path / "a.png"),
        "model.bright_score=0.4",
        "--output",
        str(destination),
    ]
    assert demo.main(argv + ["--score-thresh", "0.5"]) == 0
    # the overridden score falls below the threshold: nothing is drawn
    assert (_read(destination) == half_bright_image(H, W)).all()


def test_missing_input_is_reported(tmp_path, capsys):
    argv = ["--config-file", str(TINY_CONFIG), "--input", str(tmp_path / "nope.jpg")]
    assert demo.main(argv) == 1
    assert "nope.jpg' does not exist" in capsys.readouterr().err


def test_inputs_and_overrides_are_told_apart(tmp_path):
    image = tmp_path / "x=1.png"  # an existing file wins even when it looks like an override
    image.write_bytes(b"")
    inputs, overrides = demo.split_inputs_and_overrides(
        [str(image), "model.num_queries=10", "~train.wandb", "+new.key=1"]
    )
    assert inputs == [image] and overrides == ["model.num_queries=10", "~train.wandb", "+new.key=1"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        demo.split_inputs_and_overrides(["~/missing/photo.jpg"])
