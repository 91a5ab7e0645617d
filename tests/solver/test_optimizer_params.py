"""get_default_optimizer_params and ModuleNameLrFactor: per-parameter lr / weight decay."""

from __future__ import annotations

import pickle

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from detrex_ext.config import L, LazyConfig, get_config, instantiate
from detrex_ext.solver import ModuleNameLrFactor, get_default_optimizer_params


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.relative_position_bias_table = nn.Parameter(torch.zeros(3))
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = Block()
        self.query_embed = nn.Embedding(5, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2).requires_grad_(False)
        self.tied = nn.Linear(4, 2)
        self.tied.weight = self.head.weight  # shared: must be optimised once


def _by_name(model: nn.Module, groups: list[dict]) -> dict[str, tuple[float, float]]:
    names = {id(p): n for n, p in model.named_parameters()}  # first name of shared params
    table = {}
    for group in groups:
        for p in group["params"]:
            assert names[id(p)] not in table, "a parameter is in two groups"
            table[names[id(p)]] = (group.get("lr"), group.get("weight_decay"))
    return table


def test_all_rules_together():
    model = Net()
    groups = get_default_optimizer_params(
        model,
        base_lr=0.1,
        weight_decay=0.05,
        weight_decay_norm=0.0,
        bias_lr_factor=2.0,
        weight_decay_bias=0.001,
        lr_factor_func=ModuleNameLrFactor({"backbone": 0.1}),
        weight_decay_embed=0.01,
        zero_weight_decay_names=("relative_position_bias_table",),
    )
    table = _by_name(model, groups)
    expected = {
        "backbone.relative_position_bias_table": (0.01, 0.0),  # backbone factor, zero-wd name
        "backbone.conv.weight": (0.01, 0.05),
        "backbone.conv.bias": (0.2, 0.001),  # the bias override replaces lr and wd (detectron2)
        "backbone.bn.weight": (0.01, 0.0),  # norm
        "backbone.bn.bias": (0.2, 0.001),
        "query_embed.weight": (0.1, 0.01),  # embedding
        "norm.weight": (0.1, 0.0),
        "norm.bias": (0.2, 0.001),
        "head.weight": (0.1, 0.05),
        "head.bias": (0.2, 0.001),
        "tied.bias": (0.2, 0.001),
    }
    assert table.keys() == expected.keys()  # no frozen params, the tied weight once
    for name, (lr, wd) in expected.items():
        assert table[name] == (pytest.approx(lr), wd), name
    # identical settings share one group; groups appear in first-seen order
    assert [(pytest.approx(g["lr"]), g["weight_decay"]) for g in groups] == [
        (0.01, 0.0),
        (0.01, 0.05),
        (0.2, 0.001),
        (0.1, 0.01),
        (0.1, 0.0),
        (0.1, 0.05),
    ]
    assert [len(g["params"]) for g in groups] == [2, 1, 5, 1, 1, 1]


def test_detectron2_defaults_give_one_group_and_no_rules():
    model = Net()
    groups = get_default_optimizer_params(model, base_lr=0.1, weight_decay=0.05)
    assert len(groups) == 1 and groups[0]["lr"] == 0.1 and groups[0]["weight_decay"] == 0.05
    assert len(groups[0]["params"]) == 11
    only_wd = get_default_optimizer_params(model, weight_decay=0.05, weight_decay_norm=0.0)
    assert all("lr" not in g for g in only_wd)
    assert _by_name(model, only_wd)["backbone.relative_position_bias_table"] == (None, 0.05)
    assert _by_name(model, only_wd)["norm.weight"] == (None, 0.0)


def test_overrides_by_parameter_name():
    model = Net()
    groups = get_default_optimizer_params(
        model,
        base_lr=0.1,
        weight_decay=0.05,
        overrides={"relative_position_bias_table": {"lr": 0.5}},
    )
    assert _by_name(model, groups)["backbone.relative_position_bias_table"] == (0.5, 0.05)


def test_argument_errors():
    with pytest.raises(ValueError) as e:
        get_default_optimizer_params(Net(), bias_lr_factor=2.0)
    assert str(e.value) == "bias_lr_factor requires base_lr (the bias lr is base_lr * factor)"
    with pytest.raises(ValueError) as e:
        get_default_optimizer_params(Net(), lr_factor_func=ModuleNameLrFactor({"x": 1}))
    assert (
        str(e.value)
        == "lr_factor_func requires base_lr (the lr of a parameter is base_lr * factor)"
    )
    with pytest.raises(ValueError, match=r"conflicting settings for biases"):
        get_default_optimizer_params(Net(), weight_decay_bias=0.0, overrides={"bias": {"lr": 1.0}})


def test_lr_factor_first_match_wins_and_is_picklable():
    f = ModuleNameLrFactor({r"^backbone\.stem": 0.5, "backbone": 0.1}, default=2.0)
    assert f("backbone.stem.conv1.weight") == 0.5
    assert f("backbone.res2.0.conv1.weight") == 0.1
    assert f("sem_seg_head.backbone_proj.weight") == 0.1  # "backbone" is searched anywhere
    assert f("sem_seg_head.predictor.weight") == 2.0
    g = pickle.loads(pickle.dumps(f))
    assert g("backbone.stem.x") == 0.5 and g("head") == 2.0
    assert (
        repr(g)
        == "ModuleNameLrFactor(patterns={'^backbone\\\\.stem': 0.5, 'backbone': 0.1}, default=2.0)"
    )


def test_common_adamw_config_with_backbone_factor_and_overrides(tmp_path):
    optim = get_config("common/optim.py")
    cfg = OmegaConf.create({"optimizer": optim.AdamW}, flags={"allow_objects": True})
    cfg.optimizer.params.lr_factor_func = L(ModuleNameLrFactor)(patterns={"backbone": 0.1})
    LazyConfig.apply_overrides(
        cfg,
        [
            "optimizer.lr=2e-4",
            "optimizer.params.lr_factor_func.patterns.backbone=0.5",
            "optimizer.params.weight_decay_embed=0.0",
        ],
    )
    LazyConfig.save(cfg, tmp_path / "optim.yaml")  # saveable before the model is attached
    cfg = LazyConfig.load(tmp_path / "optim.yaml")
    model = Net()
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert (
        tuple(optimizer.defaults["betas"]) == (0.9, 0.999)
        and optimizer.defaults["weight_decay"] == 0.1
    )
    table = _by_name(model, optimizer.param_groups)
    assert table["backbone.conv.weight"] == (pytest.approx(1e-4), 0.1)
    assert table["backbone.bn.weight"] == (pytest.approx(1e-4), 0.0)
    assert table["query_embed.weight"] == (pytest.approx(2e-4), 0.0)
    assert table["head.weight"] == (pytest.approx(2e-4), 0.1)


def test_common_sgd_config():
    cfg = OmegaConf.create(
        {"optimizer": get_config("common/optim.py").SGD}, flags={"allow_objects": True}
    )
    model = Net()
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    assert isinstance(optimizer, torch.optim.SGD)
    table = _by_name(model, optimizer.param_groups)
    assert table["head.weight"] == (0.02, 1e-4) and table["norm.weight"] == (0.02, 0.0)


def test_common_adamw_fused_switch_updates_like_the_default_path():
    """optimizer.fused=True (an existing key, no '+') builds fused AdamW; one step lands where the
    default multi-tensor step lands, up to float rounding."""
    steps = {}
    for fused in ("null", "true"):
        cfg = OmegaConf.create(
            {"optimizer": get_config("common/optim.py").AdamW}, flags={"allow_objects": True}
        )
        LazyConfig.apply_overrides(cfg, [f"optimizer.fused={fused}"])
        torch.manual_seed(0)
        model = Net()
        cfg.optimizer.params.model = model
        optimizer = instantiate(cfg.optimizer)
        assert optimizer.defaults["fused"] is (True if fused == "true" else None)
        loss = sum((p.float() ** 2).sum() for p in model.parameters())
        loss.backward()
        optimizer.step()
        steps[fused] = [p.detach().clone() for p in model.parameters()]
    for default, fused in zip(steps["null"], steps["true"]):
        torch.testing.assert_close(fused, default, rtol=1e-6, atol=1e-7)
    # the step did something: AdamW moves every weight with a gradient by about lr
    torch.manual_seed(0)
    initial = [p.detach() for p in Net().parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(initial, steps["true"]))
