"""instantiate: depth-first building, plain containers, interpolation, error reports."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from detrex_ext.config import InstantiationError, L, instantiate

CALLS: list[str] = []


def record(name, **kwargs):
    """Records the order of calls and the types of the arguments it receives."""
    CALLS.append(name)
    return {"name": name, **kwargs}


class NeedsDepth:
    def __init__(self, depth: int, width: int = 1):
        self.depth, self.width = depth, width


def fail(**kwargs):
    raise ValueError("boom")


@dataclasses.dataclass
class Box:
    w: int = 1
    h: int = 2


def _root(**nodes):
    return DictConfig(nodes, flags={"allow_objects": True})


def test_children_are_built_before_parents_in_key_order():
    CALLS.clear()
    cfg = L(record)(
        name="parent", a=L(record)(name="a", deep=L(record)(name="deep")), b=L(record)(name="b")
    )
    out = instantiate(cfg)
    assert CALLS == ["deep", "a", "b", "parent"]
    assert out["a"]["deep"] == {"name": "deep"}


def test_arguments_arrive_as_plain_list_and_dict():
    cfg = L(record)(name="x", lst=[1, [2, 3], {"k": 4}], dct={"a": [5], "b": {"c": 6}}, tup=(7, 8))
    out = instantiate(cfg)
    assert type(out["lst"]) is list and type(out["lst"][1]) is list and type(out["lst"][2]) is dict
    assert (
        type(out["dct"]) is dict and type(out["dct"]["a"]) is list and type(out["dct"]["b"]) is dict
    )
    assert out["lst"] == [1, [2, 3], {"k": 4}] and out["dct"] == {"a": [5], "b": {"c": 6}}
    assert out["tup"] == [7, 8]  # omegaconf stores tuples as lists


def test_lazy_calls_inside_plain_containers_are_built():
    cfg = L(record)(name="head", shapes={"res2": L(Box)(w=4)}, layers=[L(torch.nn.ReLU)()])
    out = instantiate(cfg)
    assert out["shapes"] == {"res2": Box(w=4, h=2)}
    assert isinstance(out["layers"][0], torch.nn.ReLU)
    # a target-less config builds to a plain dict of built children
    assert instantiate(_root(a=L(Box)(), b=[1])) == {"a": Box(), "b": [1]}


def test_interpolations_resolve_against_the_whole_config():
    cfg = _root(
        train=dict(device="cpu", n=3),
        model=L(record)(
            name="m", device="${train.device}", width="${.n}", n=5, classes="${..train.n}"
        ),
    )
    out = instantiate(cfg.model)  # a sub-tree still sees the root
    assert (out["device"], out["width"], out["classes"]) == ("cpu", 5, 3)
    cfg.train.device = "cuda:1"  # late-bound: follows edits made after the config was written
    assert instantiate(cfg.model)["device"] == "cuda:1"


def test_objects_pass_through_and_dataclass_nodes_become_dataclasses():
    module = torch.nn.Linear(1, 1)
    out = instantiate(L(record)(name="x", model=module, box=OmegaConf.structured(Box(w=9))))
    assert out["model"] is module
    assert out["box"] == Box(w=9, h=2)
    assert instantiate(None) is None and instantiate(3) == 3


def test_string_target_and_plain_dict_config():
    assert isinstance(instantiate({"_target_": "torch.nn.ReLU"}), torch.nn.ReLU)


def test_error_names_key_target_and_cause():
    cfg = _root(model=L(record)(name="m", backbone=L(fail)(x=1)))
    with pytest.raises(InstantiationError) as e:
        instantiate(cfg)
    assert str(e.value) == (
        f"error building config key 'model.backbone' (target {__name__}.fail): ValueError: boom."
    )
    assert (e.value.key, e.value.target) == ("model.backbone", f"{__name__}.fail")
    assert isinstance(e.value.__cause__, ValueError)
    # building the sub-tree alone names the same full key
    with pytest.raises(InstantiationError, match=r"config key 'model\.backbone'"):
        instantiate(cfg.model)


def test_misspelled_argument_suggests_the_parameter():
    cfg = _root(layers=[L(NeedsDepth)(depht=50)])
    with pytest.raises(InstantiationError) as e:
        instantiate(cfg)
    message = str(e.value)
    assert message.startswith(
        f"error building config key 'layers[0]' (target {__name__}.NeedsDepth): TypeError: "
    )
    assert "unexpected keyword argument 'depht'" in message
    assert message.endswith(" Did you mean: 'depth'?")


def test_missing_value_and_unimportable_target():
    cfg = _root(optimizer=L(record)(name="o", model="???"))
    with pytest.raises(InstantiationError) as e:
        instantiate(cfg)
    assert (
        str(e.value)
        == "config key 'optimizer.model' is missing ('???'); set it before instantiating"
    )
    with pytest.raises(InstantiationError) as e:
        instantiate(_root(m={"_target_": "torch.nn.NoSuchLayer"}))
    assert str(e.value) == (
        "cannot build config key 'm': cannot locate 'torch.nn.NoSuchLayer': 'torch.nn' has no "
        "attribute 'NoSuchLayer'"
    )
    with pytest.raises(InstantiationError, match=r"_target_ 5 is not callable"):
        instantiate({"_target_": 5})
