"""The released-model table, name lookup, mirrors, and the tools/model_zoo.py command line."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detrex_ext import model_zoo

REPO_ROOT = Path(__file__).resolve().parents[2]

# The config names fixed in the team plan (projects/maskdino/configs/*.py), one per release file.
PLANNED_NAMES = {
    "maskdino_r50_coco_instance_seg_50ep",
    "maskdino_r50_coco_instance_seg_50ep_hid1024",
    "maskdino_r50_coco_panoptic_seg_50ep",
    "maskdino_r50_ade20k_semantic_seg_160k",
    "maskdino_r50_cityscapes_semantic_seg_90k",
    "maskdino_swinl_coco_instance_seg_50ep",
    "maskdino_swinl_coco_instance_seg_50ep_no_mask_enhance",
    "maskdino_swinl_coco_panoptic_seg_50ep",
}


def test_table_covers_every_release_with_distinct_files():
    assert set(model_zoo.list_models()) == PLANNED_NAMES
    files = [model_zoo.get_entry(n).filename for n in PLANNED_NAMES]
    assert len(set(files)) == len(files)
    for name in PLANNED_NAMES:
        entry = model_zoo.get_entry(name)
        assert entry.url.startswith(
            "https://github.com/IDEA-Research/detrex-storage/releases/download/maskdino-v0.1.0/"
        )
        assert entry.url.endswith(".pth") and entry.metrics
        assert entry.sha256 is None or len(entry.sha256) == 64
    # file names carry the reported numbers: the table must agree with them
    ref = model_zoo.get_entry("maskdino_r50_coco_instance_seg_50ep")
    assert "mask46.3ap_box51.7ap" in ref.filename and ref.metrics == {
        "segm/AP": 46.3,
        "bbox/AP": 51.7,
    }
    assert "58.3pq" in model_zoo.get_entry("maskdino_swinl_coco_panoptic_seg_50ep").filename
    assert model_zoo.list_models("semantic") == [
        "maskdino_r50_ade20k_semantic_seg_160k",
        "maskdino_r50_cityscapes_semantic_seg_90k",
    ]


def test_names_accept_config_spellings_and_suggest_on_typos():
    entry = model_zoo.get_entry("maskdino/maskdino_r50_coco_panoptic_seg_50ep.py")
    assert entry.name == "maskdino_r50_coco_panoptic_seg_50ep"
    assert entry.config_path == "maskdino/maskdino_r50_coco_panoptic_seg_50ep.py"
    with pytest.raises(KeyError, match="Did you mean: maskdino_r50_coco_panoptic_seg_50ep"):
        model_zoo.get_entry("maskdino_r50_coco_panoptc_seg_50ep")


def test_mirror_replaces_the_release_location(monkeypatch, tmp_path, zoo_env):
    name = "maskdino_r50_ade20k_semantic_seg_160k"
    filename = model_zoo.get_entry(name).filename
    monkeypatch.delenv("DETREX_ZOO_MIRROR", raising=False)
    assert model_zoo.get_checkpoint_url(name) == model_zoo.get_entry(name).url
    monkeypatch.setenv("DETREX_ZOO_MIRROR", "http://10.0.0.1:8000/zoo/")
    assert model_zoo.get_checkpoint_url(name) == f"http://10.0.0.1:8000/zoo/{filename}"
    # a local directory is used in place, without copying into the cache
    monkeypatch.setenv("DETREX_ZOO_MIRROR", str(tmp_path))
    (tmp_path / filename).write_bytes(b"weights")
    assert model_zoo.get_checkpoint(name) == tmp_path / filename


def test_resolve_weights_accepts_paths_and_rejects_unknown(tmp_path, zoo_env):
    local = tmp_path / "w.pth"
    local.write_bytes(b"x")
    assert model_zoo.resolve_weights(local) == local
    with pytest.raises(FileNotFoundError, match="neither an existing file"):
        model_zoo.resolve_weights(tmp_path / "missing.pth")


def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "model_zoo.py"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_cli_list_info_download(file_server, zoo_env):
    name = "maskdino_r50_cityscapes_semantic_seg_90k"
    filename = model_zoo.get_entry(name).filename
    payload = os.urandom(300_000)
    file_server.files[filename] = payload
    env = {"DETREX_CACHE": str(zoo_env), "DETREX_ZOO_MIRROR": file_server.base_url}

    listed = _run_cli("list", env=env)
    assert listed.returncode == 0, listed.stderr
    for planned in PLANNED_NAMES:
        assert planned in listed.stdout

    downloaded = _run_cli("download", name, "--no-progress", env=env)
    assert downloaded.returncode == 0, downloaded.stderr
    cached = zoo_env / "checkpoints" / filename
    assert cached.read_bytes() == payload
    assert str(cached) in downloaded.stdout

    info = _run_cli("info", name, env=env)
    assert info.returncode == 0, info.stderr
    assert hashlib.sha256(payload).hexdigest() in info.stdout  # the recorded digest

    offline_miss = _run_cli(
        "download", "maskdino_r50_coco_panoptic_seg_50ep", env={**env, "DETREX_OFFLINE": "1"}
    )
    assert offline_miss.returncode == 1
    assert "place it at" in offline_miss.stderr and "Traceback" not in offline_miss.stderr
