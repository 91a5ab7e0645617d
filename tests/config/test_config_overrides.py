"""LazyConfig.apply_overrides: every override kind, value parsing, and the error messages."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from detrex_ext.config import ConfigOverrideError, L, LazyConfig


def _cfg() -> DictConfig:
    return DictConfig(
        {
            "train": {
                "max_iter": 100,
                "output_dir": "./out",
                "amp": {"enabled": False},
                "steps": [1, 2],
            },
            "model": L(torch.nn.Linear)(in_features=2, out_features=3),
            "optimizer": {"lr": 0.1, "params": {"base_lr": "${..lr}"}},
        },
        flags={"allow_objects": True},
    )


def _apply(*overrides: str) -> DictConfig:
    return LazyConfig.apply_overrides(_cfg(), list(overrides))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("20", 20),
        ("1.5e-4", 1.5e-4),
        ("2e3", 2000.0),
        ("-inf", -math.inf),
        ("true", True),
        ("False", False),
        ("null", None),
        ("abc", "abc"),
        ("a/b.pth", "a/b.pth"),
        ("http://host/x.pth", "http://host/x.pth"),
        ("'1'", "1"),
        ('"a b"', "a b"),
        ("01", "01"),
        ("", ""),
        ("int(3.7)", 3),
        ("sort([3,1,2])", [1, 2, 3]),
    ],
)
def test_values_are_parsed_by_the_hydra_grammar(text, expected):
    value = _apply(f"train.output_dir={text}").train.output_dir
    if isinstance(expected, list):
        value = list(value)
    assert value == expected and type(value) is type(expected)


def test_change_keeps_the_rest_and_returns_the_same_object():
    cfg = _cfg()
    assert LazyConfig.apply_overrides(cfg, ["train.max_iter=5", "model.out_features=7"]) is cfg
    assert cfg.train.max_iter == 5 and cfg.model.out_features == 7
    assert cfg.model._target_ is torch.nn.Linear and cfg.train.output_dir == "./out"


def test_lists_replace_dicts_merge_and_list_items_are_addressable():
    cfg = _apply("train.steps=[5,6,7]", "train.amp={enabled:true,dtype:bf16}", "train.steps.0=9")
    assert list(cfg.train.steps) == [9, 6, 7]
    assert dict(cfg.train.amp) == {"enabled": True, "dtype": "bf16"}
    cfg = _apply("model={out_features:11}")
    assert (
        cfg.model._target_ is torch.nn.Linear
        and cfg.model.in_features == 2
        and cfg.model.out_features == 11
    )


def test_interpolation_values_are_late_bound():
    cfg = _apply("train.output_dir=${train.max_iter}", "train.max_iter=42")
    assert cfg.train.output_dir == 42
    cfg = _apply("optimizer.lr=0.5")
    assert cfg.optimizer.params.base_lr == 0.5


def test_add_force_add_and_delete():
    cfg = _apply("+new.key=3", "++train.max_iter=8", "++other=[1]", "~train.amp", "~train.steps.0")
    assert cfg.new.key == 3 and cfg.train.max_iter == 8 and list(cfg.other) == [1]
    assert "amp" not in cfg.train and list(cfg.train.steps) == [2]
    cfg = _apply("~train.max_iter=100")  # deletes only when the value matches
    assert "max_iter" not in cfg.train


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigOverrideError) as e:
        _apply("train.max_iters=10")
    assert str(e.value) == (
        "override 'train.max_iters=10': unknown config key 'train.max_iters'. Did you mean: "
        "'train.max_iter'? (to add a new key, write '+train.max_iters=10')"
    )
    with pytest.raises(ConfigOverrideError) as e:
        _apply("max_iter=10")
    assert "Did you mean: 'train.max_iter'?" in str(e.value)


def test_unknown_key_without_a_close_match_lists_the_siblings():
    with pytest.raises(ConfigOverrideError) as e:
        _apply("train.zzzzzzzz=1")
    assert str(e.value) == (
        "override 'train.zzzzzzzz=1': unknown config key 'train.zzzzzzzz'. No similar key exists; "
        "'train' has keys: max_iter, output_dir, amp, steps (to add a new key, write '+train.zzzzzzzz=1')"
    )


@pytest.mark.parametrize(
    "sweep",
    [
        "train.max_iter=1,2",
        "train.max_iter=choice(1,2)",
        "train.max_iter=range(1,4)",
        "a=glob(*)",
        "a=interval(0,1)",
    ],
)
def test_sweeps_point_to_multirun(sweep):
    with pytest.raises(ConfigOverrideError) as e:
        _apply(sweep)
    assert str(e.value) == (
        f"override {sweep!r} is a sweep (it lists several values); apply_overrides sets one value "
        "per key. To run one job per value, give the sweep to the launcher with --multirun "
        f"(python tools/train_net.py --config-file <config> --multirun {sweep}). To set a string "
        "that contains commas, quote it: key='a,b'"
    )
    assert _apply("train.output_dir='a,b'").train.output_dir == "a,b"


def test_other_refusals():
    with pytest.raises(ConfigOverrideError) as e:
        _apply("+train.max_iter=3")
    assert str(e.value) == (
        "override '+train.max_iter=3': 'train.max_iter' already exists; drop the '+' to change it "
        "('train.max_iter=3') or use '++' to set it whether or not it exists"
    )
    with pytest.raises(ConfigOverrideError) as e:
        _apply("train.max_iter.x=1")
    assert str(e.value) == (
        "override 'train.max_iter.x=1': 'train.max_iter' holds a value (100), not a config node, so "
        "'train.max_iter.x' cannot be set inside it"
    )
    with pytest.raises(ConfigOverrideError) as e:
        _apply("~train.max_itr")
    assert str(e.value) == (
        "override '~train.max_itr': cannot delete, unknown config key 'train.max_itr'. Did you mean: "
        "'train.max_iter'?"
    )
    with pytest.raises(ConfigOverrideError, match=r"'train.max_iter' is 100, not 5; not deleted"):
        _apply("~train.max_iter=5")
    with pytest.raises(ConfigOverrideError, match=r"cannot parse override 'train.max_iter=\[1': "):
        _apply("train.max_iter=[1")
    with pytest.raises(ConfigOverrideError, match=r"the '@package' syntax"):
        _apply("train@pkg=1")
    with pytest.raises(TypeError, match=r"a list of 'key=value' strings"):
        LazyConfig.apply_overrides(_cfg(), "train.max_iter=1")


def test_command_line_session_prints_a_suggestion():
    code = (
        "from detrex_ext.config import LazyConfig, get_config\n"
        "cfg = get_config('common/train.py')\n"
        "LazyConfig.apply_overrides(cfg, ['train.max_iters=10'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "detrex_ext.config.overrides.ConfigOverrideError: override 'train.max_iters=10': unknown "
        "config key 'train.max_iters'. Did you mean: 'train.max_iter'? (to add a new key, write "
        "'+train.max_iters=10')"
    )


def test_override_error_is_a_key_error_with_a_readable_message():
    """detectron2 raises KeyError for a bad key: ``except KeyError`` keeps working, and the
    message is not wrapped in quotes the way ``str(KeyError("..."))`` would be."""
    cfg = LazyConfig.apply_overrides(OmegaConf.create({"train": {"max_iter": 1}}), [])
    with pytest.raises(KeyError) as e:
        LazyConfig.apply_overrides(cfg, ["train.max_iters=10"])
    assert isinstance(e.value, ValueError) and isinstance(e.value, ConfigOverrideError)
    assert str(e.value).startswith("override 'train.max_iters=10': unknown config key")
