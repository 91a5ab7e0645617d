"""tools/demo.py and the Predictor with bad inputs: each refused with one error line that names
the problem, before the model loads; a folder with unreadable files processes the rest and lists
the failures; top_k and thresholds outside their range are refused instead of silently dropping
an instance."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from tool_helpers import REPO_ROOT, TINY_CONFIG, half_bright_image, load_tool

from detrex_ext.engine.predictor import Predictor, filter_instances
from detrex_ext.structures import Instances

demo = load_tool("demo")


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the demo gets as far as building the predictor."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were refused")

    monkeypatch.setattr(Predictor, "from_config", forbidden)  # the demo imports it lazily


def _demo(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = demo.main(["--config-file", str(TINY_CONFIG), "--device", "cpu", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("empty.jpg", b"", "is empty (0 bytes), not an image"),
        ("notes.txt", b"shopping list\n", "is not an image that can be read (unknown format;"),
        ("fake.png", b"\x89PNG but not really", "is not an image that can be read"),
    ],
)
def test_a_named_input_that_is_no_image_stops_before_the_model(
    capsys, tmp_path, no_model, name, content, expected
) -> None:
    Image.fromarray(half_bright_image()).save(tmp_path / "good.png")
    bad = tmp_path / name
    bad.write_bytes(content)
    code, err = _demo(capsys, "--input", str(tmp_path / "good.png"), str(bad))
    assert code == 1
    assert err.strip().startswith(f"error: {bad} {expected}")
    assert len(err.strip().splitlines()) == 1


def test_url_input_says_urls_are_not_read(capsys, no_model) -> None:
    code, err = _demo(capsys, "--input", "https://example.com/street.jpg")
    assert code == 1
    assert err.strip().startswith(
        "error: input 'https://example.com/street.jpg' is a URL; URLs are not read: download"
    )


def test_folder_with_unreadable_files_processes_the_rest(capsys, tmp_path, tiny_weights) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "c.png"):
        Image.fromarray(half_bright_image()).save(folder / name)
    (folder / "b.jpg").write_bytes(b"")
    noise = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "d.png")
    (folder / "d.png").write_bytes((folder / "d.png").read_bytes()[:2000])  # header intact
    out = tmp_path / "out"
    code, err = _demo(
        capsys, "--weights", str(tiny_weights), "--input", str(folder), "--output", str(out)
    )
    assert code == 1
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "c.png"]
    assert "error: 2 image(s) could not be read (2 processed):" in err
    assert f"  {folder / 'b.jpg'}: {folder / 'b.jpg'} is empty (0 bytes)" in err
    assert f"  {folder / 'd.png'}: {folder / 'd.png'} is a truncated or damaged image" in err


@pytest.mark.parametrize(
    "flag, value, expected",
    [
        ("--score-thresh", "1.5", "must be a number from 0 to 1, got 1.5"),
        ("--score-thresh", "-0.1", "must be a number from 0 to 1, got -0.1"),
        ("--score-thresh", "nan", "must be a number from 0 to 1, got nan"),
        ("--alpha", "2", "must be a number from 0 to 1, got 2"),
        ("--top-k", "-1", "must be an integer >= 1, got -1 (leave --top-k out"),
        ("--top-k", "0", "must be an integer >= 1, got 0"),
    ],
)
def test_out_of_range_options_are_refused(capsys, tmp_path, no_model, flag, value, expected):
    Image.fromarray(half_bright_image()).save(tmp_path / "a.png")
    with pytest.raises(SystemExit) as exit_info:
        _demo(capsys, "--input", str(tmp_path / "a.png"), flag, value)
    assert exit_info.value.code == 2
    assert f"error: argument {flag}: {expected}" in capsys.readouterr().err


def test_predictor_top_k_and_threshold_ranges(tiny_weights) -> None:
    predictor = Predictor.from_config(str(TINY_CONFIG), tiny_weights, device="cpu")
    image = half_bright_image()
    assert len(predictor(image, score_threshold=0.0)["instances"]) == 2  # no limit: both
    assert len(predictor(image, score_threshold=0.0, top_k=1)["instances"]) == 1
    for top_k in (-1, 0):  # -1 used to drop the last instance
        with pytest.raises(ValueError, match="top_k must be an integer >= 1, got"):
            predictor(image, top_k=top_k)
        with pytest.raises(ValueError, match="use None to keep every instance"):
            Predictor(predictor.model, top_k=top_k)
    for threshold in (1.5, -0.5, float("nan")):
        with pytest.raises(ValueError, match=r"score_threshold must be a number in \[0, 1\]"):
            predictor(image, score_threshold=threshold)
    scores = Instances((1, 1), scores=torch.tensor([0.1, 0.7, 0.4]))
    assert len(filter_instances(scores, None, None)) == 3
    with pytest.raises(ValueError, match="top_k"):
        filter_instances(scores, None, -1)


def test_predictor_refuses_empty_arrays_urls_and_non_images(tiny_weights, tmp_path) -> None:
    predictor = Predictor.from_config(str(TINY_CONFIG), tiny_weights, device="cpu")
    with pytest.raises(ValueError, match="the image has size 0x0 "):
        predictor(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(ValueError, match="is a URL; images are read from local files only"):
        predictor("http://example.com/a.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(OSError, match="empty.png is empty"):
        predictor(str(tmp_path / "empty.png"))


def test_demo_command_line_refuses_in_one_line(tmp_path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tools" / "demo.py"),
            "--config-file",
            str(TINY_CONFIG),
            "--input",
            str(tmp_path / "empty.jpg"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.strip() == f"error: {tmp_path / 'empty.jpg'} is empty (0 bytes), not an image"
    )
