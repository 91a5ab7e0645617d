"""LazyConfig.save: YAML that loads back equal, shortest import paths, clear refusals."""

from __future__ import annotations

import dataclasses
import enum
import math
import threading

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from detrex_ext.config import L, LazyConfig, UnsaveableConfigError, instantiate
from detrex_ext.solver import ModuleNameLrFactor


@dataclasses.dataclass
class Size:
    h: int = 1
    w: int = 2


class Color(enum.Enum):
    RED = 1


def helper(x: int = 0) -> int:
    return x


def _config() -> DictConfig:
    return DictConfig(
        {
            "optimizer": L(torch.optim.AdamW)(
                params=L(torch.nn.Linear)(in_features=2, out_features="${..width}"),
                lr=1e-4,
                betas=(0.9, 0.999),
                width=4,
            ),
            "model": L(torch.nn.Sequential)(
                layers=[L(torch.nn.ReLU)(), L(torch.nn.Tanh)()], activation=torch.nn.GELU
            ),
            "lr_factor": L(ModuleNameLrFactor)(patterns={"backbone": 0.1}),
            "size": OmegaConf.structured(Size(h=5)),
            "train": {
                "max_iter": 10,
                "eps": float("inf"),
                "none": None,
                "out": "${train.max_iter}",
                "m": "???",
            },
        },
        flags={"allow_objects": True},
    )


EXPECTED = {
    "optimizer": {
        # torch.optim.adamw.AdamW is written by its shortest import path
        "_target_": "torch.optim.AdamW",
        "params": {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": "${..width}"},
        "lr": 1e-4,
        "betas": [0.9, 0.999],
        "width": 4,
    },
    "model": {
        "_target_": "torch.nn.Sequential",
        "layers": [{"_target_": "torch.nn.ReLU"}, {"_target_": "torch.nn.Tanh"}],
        "activation": torch.nn.GELU,
    },
    "lr_factor": {
        "_target_": "detrex_ext.solver.ModuleNameLrFactor",
        "patterns": {"backbone": 0.1},
    },
    "size": {"_target_": f"{__name__}.Size", "h": 5, "w": 2},
    "train": {
        "max_iter": 10,
        "eps": math.inf,
        "none": None,
        "out": "${train.max_iter}",
        "m": "???",
    },
}


def test_round_trip_gives_an_equal_config(tmp_path):
    path = tmp_path / "config.yaml"
    LazyConfig.save(_config(), path)
    text = path.read_text()
    assert "_target_: torch.optim.AdamW\n" in text
    assert "activation: !!python/name:torch.nn.GELU ''" in text
    loaded = LazyConfig.load(path)
    assert OmegaConf.to_container(loaded, resolve=False) == EXPECTED
    assert OmegaConf.is_missing(loaded.train, "m")
    # saving what was loaded writes the same text again
    LazyConfig.save(loaded, tmp_path / "again.yaml")
    assert (tmp_path / "again.yaml").read_text() == text


def test_loaded_config_builds_the_same_objects(tmp_path):
    cfg = _config()
    LazyConfig.save(cfg, tmp_path / "c.yaml")
    loaded = LazyConfig.load(tmp_path / "c.yaml")
    for built in (instantiate(cfg.optimizer.params), instantiate(loaded.optimizer.params)):
        assert (built.in_features, built.out_features) == (2, 4)
    assert instantiate(loaded.size) == Size(h=5, w=2)
    assert instantiate(loaded.lr_factor)("backbone.stem.weight") == 0.1


def test_lambda_is_refused_naming_the_key_and_nothing_is_written(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("previous: 1\n")
    cfg = _config()
    cfg.optimizer.params.lr_factor_func = lambda name: 0.1
    with pytest.raises(UnsaveableConfigError) as e:
        LazyConfig.save(cfg, path)
    assert e.value.key == "optimizer.params.lr_factor_func"
    assert str(e.value).startswith(
        "cannot save config key 'optimizer.params.lr_factor_func': <function "
    )
    assert str(e.value).endswith(
        "is a lambda, which cannot be saved; use a module-level function or a LazyCall'd callable "
        "class instead"
    )
    assert path.read_text() == "previous: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_local_function_main_function_and_objects_are_refused(tmp_path):
    def local():
        return 1

    with pytest.raises(
        UnsaveableConfigError,
        match=r"'model\.layers\[1\]\._target_': .* is defined inside a function",
    ):
        LazyConfig.save(
            DictConfig({"model": {"layers": [1, L(local)()]}}, flags={"allow_objects": True}),
            tmp_path / "a.yaml",
        )

    def main_fn():
        return 1

    main_fn.__module__, main_fn.__qualname__ = "__main__", "main_fn"
    with pytest.raises(
        UnsaveableConfigError, match=r"is defined in __main__ \(a script or notebook\)"
    ):
        LazyConfig.save(
            DictConfig({"f": main_fn}, flags={"allow_objects": True}), tmp_path / "b.yaml"
        )

    cfg = DictConfig({"data": {"lock": threading.Lock()}}, flags={"allow_objects": True})
    with pytest.raises(UnsaveableConfigError) as e:
        LazyConfig.save(cfg, tmp_path / "c.yaml")
    assert str(e.value).startswith(
        "cannot save config key 'data.lock': _thread.lock object <unlocked _thread.lock"
    )
    assert str(e.value).endswith(
        "has no YAML form; store plain data (numbers, strings, lists, dicts) or a LazyCall that "
        "builds the object"
    )
    cfg = DictConfig({"c": Color.RED}, flags={"allow_objects": True})
    with pytest.raises(UnsaveableConfigError, match=r"'c': <Color.RED: 1> is an Enum member"):
        LazyConfig.save(cfg, tmp_path / "d.yaml")
    assert not any(tmp_path.iterdir())


def test_module_level_function_as_value_round_trips(tmp_path):
    cfg = DictConfig({"fn": helper, "call": L(helper)(x=3)}, flags={"allow_objects": True})
    LazyConfig.save(cfg, tmp_path / "f.yaml")
    loaded = LazyConfig.load(tmp_path / "f.yaml")
    assert loaded.fn is helper
    assert instantiate(loaded.call) == 3
