"""LazyCall: what the recorded node holds and which targets/arguments it accepts."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from omegaconf import DictConfig

from detrex_ext.config import L, LazyCall, instantiate


@dataclasses.dataclass
class Point:
    x: int = 0
    y: int = 0


def activation_class(name: str) -> type:
    return getattr(torch.nn, name)


def test_node_holds_live_target_and_kwargs_in_order():
    node = L(torch.nn.Linear)(in_features=2, out_features=3)
    assert isinstance(node, DictConfig)
    assert node._get_flag("allow_objects") is True
    assert list(node.keys()) == ["_target_", "in_features", "out_features"]
    assert node._target_ is torch.nn.Linear
    # not struct: keys can be added and edited freely
    node.bias = False
    assert instantiate(node).bias is None


def test_string_and_lazy_targets():
    assert L("torch.nn.ReLU")()._target_ == "torch.nn.ReLU"
    lazy_target = L(activation_class)(name="Tanh")  # a node that builds a callable
    node = L(lazy_target)()
    assert isinstance(instantiate(node), torch.nn.Tanh)


def test_dataclass_target_is_stored_as_its_import_path():
    node = L(Point)(x=1, y=2)
    assert node._target_ == f"{__name__}.Point"
    assert instantiate(node) == Point(1, 2)


def test_rejects_non_callable_target():
    with pytest.raises(TypeError) as e:
        LazyCall(3)
    assert str(e.value) == (
        "LazyCall target must be a callable, a dotted import path or a lazy config; got 3 of type int"
    )


def test_rejects_positional_arguments_and_explicit_target():
    with pytest.raises(TypeError) as e:
        L(torch.nn.Linear)(2, 3)
    assert str(e.value) == (
        "LazyCall(Linear) takes keyword arguments only, got 2 positional argument(s); "
        "name them, e.g. L(f)(x=1)"
    )
    with pytest.raises(TypeError, match=r"LazyCall sets '_target_' itself"):
        L(torch.nn.Linear)(_target_=torch.nn.ReLU)
