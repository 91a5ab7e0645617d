"""model_zoo.get and Predictor.from_config(<model name>) download, verify, cache and build."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from detrex_ext import model_zoo
from detrex_ext.checkpoint import catalog
from detrex_ext.config import LazyConfig
from detrex_ext.engine.predictor import Predictor
from detrex_ext.model_zoo import model_zoo as zoo_module

TINY_CONFIG = Path(__file__).resolve().parents[1] / "tools" / "fixtures" / "tiny_config.py"
NAME = "maskdino_r50_coco_instance_seg_50ep"


def _checkpoint_bytes(weight: float) -> bytes:
    state = {
        "pixel_scorer.weight": torch.full((1, 3, 1, 1), weight),
        "pixel_scorer.bias": torch.zeros(1),
    }
    buffer = io.BytesIO()
    torch.save({"model": state}, buffer)
    return buffer.getvalue()


@pytest.fixture()
def served_tiny_release(file_server, zoo_env, monkeypatch):
    """The release of NAME served locally (through the mirror variable), with the tiny config
    standing in for the Mask DINO config so that building and loading take milliseconds."""
    payload = _checkpoint_bytes(1 / 3)
    file_server.files[model_zoo.get_entry(NAME).filename] = payload
    monkeypatch.setenv("DETREX_ZOO_MIRROR", file_server.base_url)

    def tiny_config(name, trained=False):
        return LazyConfig.load(str(TINY_CONFIG))

    monkeypatch.setattr(zoo_module, "get_config", tiny_config)  # used by model_zoo.get
    monkeypatch.setattr(model_zoo, "get_config", tiny_config)  # the public name
    return payload


def test_get_downloads_verifies_caches_and_builds(served_tiny_release, file_server, zoo_env):
    model = model_zoo.get(NAME, progress=False)
    assert not model.training
    assert torch.equal(model.pixel_scorer.weight, torch.full((1, 3, 1, 1), 1 / 3))
    cached = zoo_env / "checkpoints" / model_zoo.get_entry(NAME).filename
    assert cached.read_bytes() == served_tiny_release
    recorded = hashlib.sha256(served_tiny_release).hexdigest()
    assert cached.with_name(cached.name + ".sha256").read_text().startswith(recorded)

    # the mirror was asked for a sha256 record (it has none) and for the file, once
    filename = model_zoo.get_entry(NAME).filename
    asked = [filename + ".sha256", filename]
    assert [r["path"] for r in file_server.requests] == asked
    again = model_zoo.get(NAME, progress=False)  # from the cache: no second request
    assert [r["path"] for r in file_server.requests] == asked
    assert torch.equal(again.pixel_scorer.weight, model.pixel_scorer.weight)
    untrained = model_zoo.get(NAME, trained=False)
    assert untrained.training and len(file_server.requests) == 2


def test_get_refuses_a_file_that_does_not_match_the_table(
    served_tiny_release, zoo_env, monkeypatch
):
    entry = model_zoo.get_entry(NAME)
    tampered = dataclasses.replace(entry, sha256=hashlib.sha256(b"the published file").hexdigest())
    monkeypatch.setitem(catalog.MODEL_ZOO, NAME, tampered)
    with pytest.raises(model_zoo.ChecksumMismatchError, match="Nothing was written to the cache"):
        model_zoo.get(NAME, progress=False)
    assert not (zoo_env / "checkpoints" / entry.filename).exists()


def test_predictor_from_a_model_name_uses_the_released_weights(served_tiny_release):
    predictor = Predictor.from_config(NAME, device="cpu")
    image = np.full((48, 96, 3), 40, dtype=np.uint8)
    image[:, :48] = 220
    instances = predictor(image, score_threshold=0.5)["instances"]
    assert len(instances) == 1 and instances.pred_masks[0, :, :40].all()
