"""The zoo against the real Mask DINO configs: every name loads, and get() restores every weight of
the reference architecture from a checkpoint served over HTTP."""

from __future__ import annotations

import io

import pytest
import torch

from detrex_ext import model_zoo
from detrex_ext.config import instantiate


@pytest.mark.parametrize("name", model_zoo.list_models())
def test_every_released_name_has_a_config(name):
    cfg = model_zoo.get_config(name, trained=True)
    assert cfg.train.init_checkpoint == model_zoo.get_checkpoint_url(name)
    assert "_target_" in cfg.model and "test" in cfg.dataloader
    expected_classes = {"COCO 2017": 80, "COCO 2017 panoptic": 133, "ADE20K": 150, "Cityscapes": 19}
    assert cfg.model.num_classes == expected_classes[model_zoo.get_entry(name).dataset]


@pytest.mark.slow
def test_get_restores_every_weight_of_the_reference_model(file_server, zoo_env, monkeypatch):
    name = "maskdino_r50_coco_instance_seg_50ep"
    torch.manual_seed(1)
    reference = instantiate(model_zoo.get_config(name).model)
    assert sum(p.numel() for p in reference.parameters()) / 1e6 == pytest.approx(
        model_zoo.get_entry(name).params_m, abs=0.05
    )
    buffer = io.BytesIO()
    torch.save({"model": reference.state_dict(), "iteration": 368749}, buffer)
    file_server.files[model_zoo.get_entry(name).filename] = buffer.getvalue()
    del buffer
    monkeypatch.setenv("DETREX_ZOO_MIRROR", file_server.base_url)

    torch.manual_seed(2)  # a different initialisation: only loading can make them equal
    model = model_zoo.get(name, progress=False)
    assert not model.training
    loaded, expected = model.state_dict(), reference.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
