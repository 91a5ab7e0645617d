"""LazyConfig.to_py: readable Python text of a config."""

from __future__ import annotations

import ast
import sys

import torch
from omegaconf import DictConfig

from detrex_ext.config import L, LazyConfig
from detrex_ext.config.serialization import config_to_py
from detrex_ext.solver import ModuleNameLrFactor


def _cfg() -> DictConfig:
    return DictConfig(
        {
            "train": {
                "max_iter": 10,
                "out": "${train.max_iter}",
                "amp": {"enabled": False},
                "1x": 3,
            },
            "optimizer": L(torch.optim.SGD)(
                params=L(ModuleNameLrFactor)(patterns={"backbone": 0.1}), lr=0.02, layers=[1, "a"]
            ),
            "act": torch.nn.ReLU,
        },
        flags={"allow_objects": True},
    )


EXPECTED = """import detrex_ext.solver
import torch.nn
import torch.optim

cfg.train.max_iter = 10
cfg.train.out = 10
cfg.train.amp.enabled = False
cfg.train['1x'] = 3
cfg.optimizer = torch.optim.SGD(params=detrex_ext.solver.ModuleNameLrFactor(patterns={'backbone': 0.1}), lr=0.02, layers=[1, 'a'])
cfg.act = torch.nn.ReLU
"""


def test_exact_text_in_config_order_with_imports():
    assert config_to_py(_cfg(), formatted=False) == EXPECTED
    ast.parse(EXPECTED)


def test_black_formatting_and_fallback_without_black(monkeypatch):
    import black

    text = LazyConfig.to_py(_cfg())
    assert text == black.format_str(EXPECTED, mode=black.Mode(line_length=100))
    monkeypatch.setitem(sys.modules, "black", None)  # makes `import black` raise ImportError
    assert LazyConfig.to_py(_cfg()) == EXPECTED


def test_unresolvable_interpolations_are_shown_as_written():
    cfg = DictConfig({"model": {"classes": "${data.num_classes}"}})
    assert (
        config_to_py(cfg, prefix="c.", formatted=False)
        == "c.model.classes = '${data.num_classes}'\n"
    )
