"""Bad overrides and incomplete configs are refused by tools/train_net.py before anything is
built, with one message that names the key and what to write instead (the demo config)."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from engine_helpers import REPO_ROOT, TRAIN_NET, subprocess_env

from detrex_ext.config import ConfigOverrideError, LazyConfig, get_config
from detrex_ext.engine import runner
from detrex_ext.engine.config_checks import InvalidConfigError, check_config

DEMO = REPO_ROOT / "projects" / "maskdino" / "configs" / "maskdino_demo_synthetic.py"


def _train_net_module():
    spec = importlib.util.spec_from_file_location("train_net_under_test", TRAIN_NET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def no_model_build(monkeypatch):
    """Fail the test if the launcher gets as far as instantiating anything."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the launcher built something before refusing the config")

    monkeypatch.setattr(runner, "instantiate", forbidden)


def _refusal(capsys, tmp_path: Path, *args: str, config: Path = DEMO) -> str:
    output_dir = tmp_path / "out"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        _train_net_module().cli(
            ["--config-file", str(config), f"train.output_dir={output_dir}", *args]
        )
    assert exit_info.value.code == 2
    assert not output_dir.exists()  # nothing written either
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.split("train_net.py: error: ", 1)[1].strip()


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "train.max_iter=abc",
            "override 'train.max_iter=abc': 'train.max_iter' is an integer (1500) but the override "
            "gives str 'abc'; write a number, e.g. train.max_iter=1500",
        ),
        (
            "train.max_iter=",
            "'train.max_iter' is an integer (1500) but the override gives no value",
        ),
        (
            "train.max_iter=None",
            "gives str 'None'; write a number, e.g. train.max_iter=1500 ('None' is a string; "
            "train.max_iter=null sets None)",
        ),
        ("=1", "override '=1' names no key; write path.to.key=value"),
        (
            "train.max_iter=-5",
            "has invalid values:\n  train.max_iter=-5 must be an integer >= 1 (the number of "
            "training iterations)",
        ),
        (
            "train.checkpointer.period=0",
            "train.checkpointer.period=0 must be an integer >= 1 (iterations between checkpoints)",
        ),
        (
            "train.device=gpu",
            "train.device='gpu' is not a device; use cpu, cuda, cuda:1 (a GPU by index) or mps",
        ),
        ("train.amp.enabled=yes", "'train.amp.enabled' is a boolean (False); write"),
        ("train.checkpointer=5", "'train.checkpointer' is a config section (keys: period, "),
        ("optimizer.lr=0", "optimizer.lr=0 must be a number > 0"),
    ],
)
def test_bad_override_is_refused_before_the_model_is_built(
    capsys, tmp_path, no_model_build, override, expected
) -> None:
    assert expected in _refusal(capsys, tmp_path, override)


def test_every_bad_value_is_listed_in_one_message(capsys, tmp_path, no_model_build) -> None:
    message = _refusal(
        capsys, tmp_path, "train.log_period=0", "train.eval_period=-1", "train.seed=1.5"
    )
    assert message.startswith(f"{DEMO} has invalid values:")
    assert "train.log_period=0 must be" in message
    assert "train.eval_period=-1 must be an integer >= 0" in message
    assert "train.seed=1.5 must be an integer" in message


def test_none_for_a_string_key_warns_that_it_is_the_string_none(caplog) -> None:
    cfg = get_config("maskdino/maskdino_demo_synthetic.py")
    with caplog.at_level(logging.WARNING, logger="detrex_ext.config"):
        LazyConfig.apply_overrides(cfg, ["train.init_checkpoint=None"])
    assert cfg.train.init_checkpoint == "None"
    assert (
        "sets 'train.init_checkpoint' to the string 'None'; if you meant None, write "
        "train.init_checkpoint=null" in caplog.text
    )
    caplog.clear()
    LazyConfig.apply_overrides(cfg, ["train.init_checkpoint='None'"])  # quoted: meant as is
    assert "string 'None'" not in caplog.text


def test_override_values_that_fit_are_accepted() -> None:
    cfg = get_config("maskdino/maskdino_demo_synthetic.py")
    LazyConfig.apply_overrides(
        cfg,
        [
            "train.max_iter=1e4",  # an integral float for an integer key becomes that integer
            "train.seed=null",
            "train.eval_period=${train.log_period}",
            "dataloader.test.mapper.augmentations.0.short_edge_length=[64,96]",
            "optimizer.lr=1",
        ],
    )
    assert cfg.train.max_iter == 10000 and isinstance(cfg.train.max_iter, int)
    assert cfg.train.eval_period == 50 and cfg.train.seed is None
    check_config(cfg)
    with pytest.raises(ConfigOverrideError) as error:
        LazyConfig.apply_overrides(cfg, ["train.max_iter=abc"])
    assert isinstance(error.value, KeyError)  # detectron2's override errors are KeyErrors
    assert str(error.value).startswith("override 'train.max_iter=abc'")  # no KeyError quotes


def test_config_lacking_sections_lists_them_all(capsys, tmp_path, no_model_build) -> None:
    config = tmp_path / "partial_config.py"
    config.write_text(
        textwrap.dedent(
            """
            from detrex_ext.config import get_config

            model = get_config("maskdino/maskdino_demo_synthetic.py").model
            train = get_config("common/train.py").train
            """
        )
    )
    message = _refusal(capsys, tmp_path, "train.max_iter=5", config=config)
    assert message.startswith(
        f"{config} lacks dataloader, optimizer, lr_multiplier: a training run needs the "
        "top-level keys model, dataloader, optimizer, lr_multiplier, train"
    )
    message = _refusal(capsys, tmp_path, "--eval-only", config=config)
    assert message.startswith(f"{config} lacks dataloader: an --eval-only run needs")


def test_check_config_on_a_config_without_train_values() -> None:
    cfg = get_config("maskdino/maskdino_demo_synthetic.py")
    del cfg.train
    with pytest.raises(InvalidConfigError, match=r"lacks train: a training run needs"):
        check_config(cfg)


def test_real_command_line_refuses_in_one_line(tmp_path) -> None:
    output_dir = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(TRAIN_NET),
            "--config-file",
            str(DEMO),
            f"train.output_dir={output_dir}",
            "train.max_iter=abc",
        ],
        env=subprocess_env(),
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "train_net.py: error: override 'train.max_iter=abc': 'train.max_iter' is an integer"
        )
    )
    assert "Traceback" not in proc.stderr and "Model:" not in proc.stdout + proc.stderr
    assert not output_dir.exists()
