import pytest
import torch
from torch import nn

from detrex_ext.layers import FrozenBatchNorm2d, ShapeSpec
from detrex_ext.modeling import Backbone, TimmBackbone


def test_resnet_features_names_shapes_and_values():
    backbone = TimmBackbone("resnet18", out_features=("res2", "res3", "res4", "res5")).eval()
    assert isinstance(backbone, Backbone)
    assert backbone.output_shape() == {
        "res2": ShapeSpec(channels=64, stride=4),
        "res3": ShapeSpec(channels=128, stride=8),
        "res4": ShapeSpec(channels=256, stride=16),
        "res5": ShapeSpec(channels=512, stride=32),
    }
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = backbone(x)
        raw = backbone.model(x)  # timm's own list, strides 2..32
    assert list(out) == ["res2", "res3", "res4", "res5"]
    assert tuple(out["res3"].shape) == (2, 128, 8, 12)
    for name, feature in zip(["res1", "res2", "res3", "res4", "res5"], raw):
        if name in out:
            assert torch.equal(out[name], feature)
    # frozen batch norm by default, nothing left as a trainable BatchNorm
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules())
    stem_only = TimmBackbone("resnet18", out_features=("res1", "res3"))
    assert list(stem_only(x)) == ["res1", "res3"]


def test_freeze_at_stem_and_stages():
    backbone = TimmBackbone("resnet18", norm="BN", freeze_at=1)
    model = backbone.model
    assert not model.conv1.weight.requires_grad and isinstance(model.bn1, FrozenBatchNorm2d)
    assert all(p.requires_grad for p in model.layer1.parameters())
    assert isinstance(model.layer1[0].bn1, nn.BatchNorm2d)
    backbone = TimmBackbone("resnet18", norm="BN", freeze_at=3)
    model = backbone.model
    assert not any(p.requires_grad for p in model.layer2.parameters())
    assert isinstance(model.layer2[1].bn2, FrozenBatchNorm2d)
    assert all(p.requires_grad for p in model.layer3.parameters())
    assert TimmBackbone("resnet18", norm="BN", freeze_at=0).model.conv1.weight.requires_grad


def test_layer_norm_model_with_flattened_stage_names():
    backbone = TimmBackbone("convnext_atto", freeze_at=2, out_features=("res4", "res5"))
    model = backbone.model
    assert not any(p.requires_grad for p in model.stages_0.parameters())
    assert all(p.requires_grad for p in model.stages_1.parameters())
    out = backbone(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res4": (1, 160, 4, 4),
        "res5": (1, 320, 2, 2),
    }


def test_channels_last_models_are_returned_nchw():
    backbone = TimmBackbone(
        "swin_tiny_patch4_window7_224",
        img_size=64,
        embed_dim=8,
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 1, 1),
        window_size=2,
    )
    out = backbone(torch.randn(1, 3, 64, 64))
    assert tuple(out["res2"].shape) == (1, 8, 16, 16) and tuple(out["res5"].shape) == (1, 64, 2, 2)


def test_errors():
    with pytest.raises(ValueError, match="no features"):
        TimmBackbone("resnet18", out_features=("res6",))
    with pytest.raises(ValueError, match="norm must be one of"):
        TimmBackbone("resnet18", norm="GN")
    with pytest.raises(ValueError, match="no res7 stage"):
        TimmBackbone("resnet18", freeze_at=7)
