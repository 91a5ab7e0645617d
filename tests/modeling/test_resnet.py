import copy

import pytest
import torch
import torchvision
from torch import nn

from detrex_ext.layers import FrozenBatchNorm2d, ShapeSpec
from detrex_ext.modeling.backbone import (
    Backbone,
    ResNet,
    build_resnet_backbone,
    convert_d2_resnet_to_torchvision,
    convert_torchvision_resnet_state_dict,
)


def _randomize_bn_buffers(model: nn.Module) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 1.5)


def test_resnet50_keys_count_and_parameters():
    model = build_resnet_backbone(depth=50, norm="FrozenBN")
    state = model.state_dict()
    assert len(state) == 265
    assert "stem.conv1.weight" in state and "stem.conv1.norm.running_var" in state
    assert "res2.0.shortcut.weight" in state and "res2.0.shortcut.norm.bias" in state
    assert "res5.2.conv3.norm.weight" in state and "res2.1.shortcut.weight" not in state
    assert not any("num_batches_tracked" in key for key in state)
    assert sum(p.numel() for p in model.parameters()) == 23_454_912
    buffers = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("weight", "bias")))
    assert buffers == 53_120
    # stride sits in the 3x3 conv of the first block of res3..res5
    assert model.res3[0].conv1.stride == (1, 1) and model.res3[0].conv2.stride == (2, 2)
    assert tuple(state["res4.0.conv1.weight"].shape) == (256, 512, 1, 1)


def test_resnet_output_shapes_and_interface():
    model = build_resnet_backbone(depth=50, out_features=("res2", "res3", "res4", "res5"))
    assert isinstance(model, Backbone)
    assert model.output_shape() == {
        "res2": ShapeSpec(channels=256, stride=4),
        "res3": ShapeSpec(channels=512, stride=8),
        "res4": ShapeSpec(channels=1024, stride=16),
        "res5": ShapeSpec(channels=2048, stride=32),
    }
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (1, 256, 16, 24),
        "res3": (1, 512, 8, 12),
        "res4": (1, 1024, 4, 6),
        "res5": (1, 2048, 2, 3),
    }
    with pytest.raises(ValueError, match="Unknown ResNet out_features"):
        build_resnet_backbone(depth=50, out_features=("res6",))
    with pytest.raises(ValueError, match="depth"):
        build_resnet_backbone(depth=42)


def test_resnet_truncates_unused_stages_and_basic_blocks():
    model = build_resnet_backbone(depth=18, norm="BN", out_features=("stem", "res3"))
    assert model.stage_names == ["res2", "res3"] and not hasattr(model, "res4")
    assert model.output_shape()["res3"] == ShapeSpec(channels=128, stride=8)
    out = model(torch.randn(2, 3, 32, 32))
    assert tuple(out["stem"].shape) == (2, 64, 8, 8) and tuple(out["res3"].shape) == (2, 128, 4, 4)
    reference = torchvision.models.resnet18()
    ours = sum(p.numel() for p in build_resnet_backbone(depth=18, norm="BN").parameters())
    assert ours == sum(p.numel() for n, p in reference.named_parameters() if not n.startswith("fc"))


def test_freeze_at():
    model = build_resnet_backbone(depth=50, norm="BN", freeze_at=2)
    assert isinstance(model.stem.conv1.norm, FrozenBatchNorm2d)
    assert isinstance(model.res2[0].conv1.norm, FrozenBatchNorm2d)
    assert isinstance(model.res3[0].conv1.norm, nn.BatchNorm2d)
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert not any(p.requires_grad for p in model.res2.parameters())
    assert all(p.requires_grad for p in model.res3.parameters())
    trainable = build_resnet_backbone(depth=50, norm="BN", freeze_at=0)
    assert all(p.requires_grad for p in trainable.parameters())


def test_torchvision_converter_round_trip_gives_identical_outputs():
    reference = torchvision.models.resnet50()
    _randomize_bn_buffers(reference)
    reference.eval()
    converted = convert_torchvision_resnet_state_dict(reference.state_dict())
    assert len(converted) == 265
    model = build_resnet_backbone(depth=50, norm="FrozenBN").eval()
    model.load_state_dict(converted, strict=True)

    x = torch.randn(1, 3, 64, 64)
    frozen_reference = FrozenBatchNorm2d.convert_frozen_batchnorm(copy.deepcopy(reference))
    with torch.no_grad():
        ours = model(x)
        for net, exact in ((frozen_reference, True), (reference, False)):
            y = net.maxpool(net.relu(net.bn1(net.conv1(x))))
            for index in range(1, 5):
                y = getattr(net, f"layer{index}")(y)
                expected, got = y, ours[f"res{index + 1}"]
                if exact:  # same arithmetic in torchvision's own forward: identical outputs
                    assert torch.equal(got, expected)
                else:  # eval-mode BatchNorm rounds differently: equal up to fp32 noise
                    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()

    back = convert_d2_resnet_to_torchvision(
        convert_torchvision_resnet_state_dict(reference.state_dict(), prefix="backbone."),
        prefix="backbone.",
    )
    original = {
        k: v
        for k, v in reference.state_dict().items()
        if not k.startswith("fc") and "num_batches" not in k
    }
    assert back.keys() == original.keys()
    assert all(back[k] is original[k] or torch.equal(back[k], original[k]) for k in original)


def test_converter_rejects_foreign_keys():
    with pytest.raises(KeyError, match="not a torchvision/timm ResNet key"):
        convert_torchvision_resnet_state_dict({"head.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="not a detectron2 ResNet key"):
        convert_d2_resnet_to_torchvision({"res2.0.bn1.weight": torch.zeros(1)})


def test_resnet_class_requires_4d_input():
    model = build_resnet_backbone(depth=18, norm="BN")
    assert isinstance(model, ResNet)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model(torch.randn(3, 32, 32))


def test_make_default_stages_builds_detrex_resnet50():
    """detrex's config form: ResNet(stem=BasicStem(...), stages=ResNet.make_default_stages(50,
    ...)). Same parameters as torchvision's ResNet-50 convolutions (no fc, frozen norms)."""
    from detrex_ext.modeling.backbone import BasicStem, BottleneckBlock

    model = ResNet(
        stem=BasicStem(in_channels=3, out_channels=64, norm="FrozenBN"),
        stages=ResNet.make_default_stages(depth=50, stride_in_1x1=False, norm="FrozenBN"),
        out_features=["res2", "res3", "res4", "res5"],
        freeze_at=1,
    )
    reference = torchvision.models.resnet50()
    convs = [p for n, p in reference.named_parameters() if "conv" in n or "downsample.0" in n]
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in convs)
    assert not any(p.requires_grad for p in model.stem.parameters())  # freeze_at=1: the stem
    assert all(p.requires_grad for p in model.res2.parameters())
    outputs = model(torch.zeros(1, 3, 64, 64))
    assert {k: tuple(v.shape[1:]) for k, v in outputs.items()} == {
        "res2": (256, 16, 16),
        "res3": (512, 8, 8),
        "res4": (1024, 4, 4),
        "res5": (2048, 2, 2),
    }
    stage = model.res3
    assert isinstance(stage[0], BottleneckBlock) and stage[0].conv2.stride == (2, 2)
    assert stage[0].conv1.out_channels == 128  # bottleneck width = out_channels / 4


def test_make_default_stages_depth_18_and_per_block_keywords():
    from detrex_ext.modeling.backbone import BasicBlock

    stages = ResNet.make_default_stages(18, norm="BN")
    assert [len(s) for s in stages] == [2, 2, 2, 2]
    assert all(isinstance(b, BasicBlock) for s in stages for b in s)
    assert [s[-1].out_channels for s in stages] == [64, 128, 256, 512]
    blocks = ResNet.make_stage(
        BasicBlock, 3, in_channels=8, out_channels=16, stride_per_block=[1, 2, 1], norm="BN"
    )
    assert [b.stride for b in blocks] == [1, 2, 1]
    with pytest.raises(ValueError, match="stride_per_block has 2 values for 3 blocks"):
        ResNet.make_stage(BasicBlock, 3, in_channels=8, out_channels=16, stride_per_block=[1, 2])
