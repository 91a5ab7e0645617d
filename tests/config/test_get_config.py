"""get_config / list_configs / try_get_key over the configs shipped with the package."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from detrex_ext.config import (
    LazyConfig,
    get_config,
    get_config_file,
    list_configs,
    packaged_configs,
    try_get_key,
)

REPO = Path(__file__).resolve().parents[2]


def test_common_train_is_the_detrex_superset_with_our_defaults():
    train = get_config("common/train.py").train
    assert OmegaConf.to_container(train, resolve=False) == {
        "output_dir": "./output",
        "init_checkpoint": "",
        "eval_allow_partial_checkpoint": False,
        "max_iter": 90000,
        "amp": {"enabled": False, "dtype": "bf16"},
        "ddp": {
            "broadcast_buffers": False,
            "find_unused_parameters": False,
            "fp16_compression": False,
        },
        "checkpointer": {"period": 5000, "max_to_keep": 100},
        "eval_period": 5000,
        "log_period": 20,
        "device": "cuda",
        "clip_grad": {"enabled": False, "params": {"max_norm": 0.1, "norm_type": 2}},
        "model_ema": {
            "enabled": False,
            "decay": 0.999,
            "device": "",
            "use_ema_weights_for_eval_only": False,
        },
        "seed": -1,
        "fast_dev_run": {"enabled": False},
        "wandb": {
            "enabled": False,
            "params": {
                "dir": "${train.output_dir}/wandb",
                "project": "detrex_ext",
                "name": "experiment",
                "mode": "online",
            },
        },
        "cudnn_benchmark": False,
        "gradient_accumulation_steps": 1,
        "compile": {"enabled": False, "mode": None},
    }


def test_common_configs_resolve_to_the_repository_tree():
    assert (
        get_config_file("common/train.py") == (REPO / "configs" / "common" / "train.py").resolve()
    )
    assert get_config_file("common/optim") == (REPO / "configs" / "common" / "optim.py").resolve()
    names = list_configs()
    for name in [
        "common/train.py",
        "common/optim.py",
        "common/coco_schedule.py",
        "common/common_schedule.py",
    ]:
        assert name in names
    assert names == sorted(names)
    assert set(get_config("common/optim.py").keys()) == {"SGD", "AdamW"}


def test_project_configs_map_to_projects_configs(tmp_path, monkeypatch):
    assert (
        packaged_configs._project_config_dirs()["maskdino"]
        == REPO / "projects" / "maskdino" / "configs"
    )
    configs = tmp_path / "demo" / "configs"
    (configs / "models").mkdir(parents=True)
    (configs / "models" / "net.py").write_text("model = dict(width=2)\n")
    (configs / "exp.py").write_text("from .models.net import model\nmodel.width = 3\n")
    (configs / "_private.py").write_text("x = dict()\n")
    monkeypatch.setattr(packaged_configs, "_project_config_dirs", lambda: {"demo": configs})
    assert get_config("demo/exp.py").model.width == 3
    assert get_config("demo/models/net").model.width == 2
    assert "demo/exp.py" in list_configs() and "demo/models/net.py" in list_configs()
    assert "demo/_private.py" not in list_configs()


def test_missing_config_lists_the_available_ones(monkeypatch, tmp_path):
    configs = tmp_path / "demo" / "configs"
    configs.mkdir(parents=True)
    (configs / "maskdino_r50_coco_instance_seg_50ep.py").write_text("")
    monkeypatch.setattr(packaged_configs, "_project_config_dirs", lambda: {"demo": configs})
    with pytest.raises(FileNotFoundError) as e:
        get_config("demo/maskdino_r50_coco_instance_50ep.py")
    message = str(e.value)
    assert message.startswith(
        "no shipped config 'demo/maskdino_r50_coco_instance_50ep.py' (looked for "
    )
    assert str(configs / "maskdino_r50_coco_instance_50ep.py") in message
    assert "Did you mean: 'demo/maskdino_r50_coco_instance_seg_50ep.py'?" in message
    listed = message.split(" Available configs: ")[1].split(", ")
    assert listed == sorted(listed)  # DATA's common/data/* files may be listed as well
    assert {
        "common/train.py",
        "common/optim.py",
        "demo/maskdino_r50_coco_instance_seg_50ep.py",
    } <= set(listed)
    for bad in ["/abs/train.py", "../configs/common/train.py", ""]:
        with pytest.raises(ValueError, match=r"must be relative to the shipped configs"):
            get_config_file(bad)


def test_notebook_session_edit_save_and_load_again(tmp_path):
    cfg = get_config("common/train.py")
    cfg.train.max_iter = 1234
    cfg.train.amp.enabled = True
    cfg.train.output_dir = str(tmp_path / "run")
    LazyConfig.save(cfg, tmp_path / "config.yaml")
    loaded = LazyConfig.load(tmp_path / "config.yaml")
    assert OmegaConf.to_container(loaded, resolve=False) == OmegaConf.to_container(
        cfg, resolve=False
    )
    assert loaded.train.wandb.params.dir == str(tmp_path / "run" / "wandb")


def test_try_get_key_returns_the_first_present_key():
    cfg = OmegaConf.create({"train": {"device": "cpu", "none": None}, "model": {}})
    assert try_get_key(cfg, "model.device", "train.device", default="cuda") == "cpu"
    assert try_get_key(cfg, "model.device", default="cuda") == "cuda"
    assert try_get_key(cfg, "train.none", "train.device") is None
