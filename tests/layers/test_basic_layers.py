import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detrex_ext.layers import Conv2d, FrozenBatchNorm2d, LayerNorm2d, ShapeSpec, get_norm


def _random_bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    return bn.eval()


def test_shape_spec_fields():
    spec = ShapeSpec(channels=256, stride=4)
    assert (spec.channels, spec.height, spec.width, spec.stride) == (256, None, None, 4)


def test_frozen_bn_matches_eval_batchnorm_and_has_no_parameters():
    bn = _random_bn(6)
    frozen = FrozenBatchNorm2d(6)
    frozen.load_state_dict(bn.state_dict())  # includes num_batches_tracked: must be ignored
    x = torch.randn(2, 6, 5, 7)
    torch.testing.assert_close(frozen(x), bn(x))
    assert list(frozen.parameters()) == []
    assert sorted(frozen.state_dict()) == ["bias", "running_mean", "running_var", "weight"]


def test_frozen_bn_formula_and_load_without_num_batches_tracked():
    frozen = FrozenBatchNorm2d(2)
    state = {
        "weight": torch.tensor([2.0, 1.0]),
        "bias": torch.tensor([0.5, -1.0]),
        "running_mean": torch.tensor([1.0, 0.0]),
        "running_var": torch.tensor([4.0 - 1e-5, 1.0 - 1e-5]),
    }
    frozen.load_state_dict(state)  # strict: no num_batches_tracked expected
    x = torch.tensor([3.0, 2.0]).view(1, 2, 1, 1)
    # channel 0: (3 - 1) * 2 / 2 + 0.5 = 2.5; channel 1: 2 * 1 / 1 - 1 = 1
    torch.testing.assert_close(frozen(x).flatten(), torch.tensor([2.5, 1.0]))
    assert frozen(x.bfloat16()).dtype == torch.bfloat16


def test_frozen_bn_training_path_matches_inference_kernel_and_passes_gradients():
    bn = _random_bn(3)
    frozen = FrozenBatchNorm2d(3)
    frozen.load_state_dict(bn.state_dict())
    x = torch.randn(2, 3, 4, 5)
    inference = frozen(x)  # no grad needed: detectron2's fused batch_norm kernel
    torch.testing.assert_close(inference, bn(x), rtol=0, atol=0)
    x.requires_grad_(True)
    training = frozen(x)  # the multiply-add form, differentiable w.r.t. the input
    torch.testing.assert_close(training, inference)
    training.sum().backward()
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    torch.testing.assert_close(x.grad, scale.view(1, 3, 1, 1).expand_as(x).detach())


def test_convert_frozen_batchnorm_recurses():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), _random_bn(4), nn.Sequential(_random_bn(4)))
    x = torch.randn(1, 3, 4, 4)
    expected = model(x)
    converted = FrozenBatchNorm2d.convert_frozen_batchnorm(model)
    assert isinstance(converted[1], FrozenBatchNorm2d)
    assert isinstance(converted[2][0], FrozenBatchNorm2d)
    torch.testing.assert_close(converted(x), expected)


@pytest.mark.parametrize(
    "name,cls",
    [
        ("BN", nn.BatchNorm2d),
        ("SyncBN", nn.SyncBatchNorm),
        ("FrozenBN", FrozenBatchNorm2d),
        ("GN", nn.GroupNorm),
        ("LN", LayerNorm2d),
    ],
)
def test_get_norm_types(name, cls):
    norm = get_norm(name, 64)
    assert isinstance(norm, cls)
    assert norm(torch.randn(2, 64, 3, 3)).shape == (2, 64, 3, 3)


def test_get_norm_gn_groups_empty_and_errors():
    assert get_norm("GN", 64).num_groups == 32
    assert get_norm("", 8) is None and get_norm(None, 8) is None
    assert isinstance(get_norm(lambda c: nn.Identity(), 8), nn.Identity)
    with pytest.raises(ValueError, match="Unknown norm 'BatchNorm'"):
        get_norm("BatchNorm", 8)


def test_layer_norm_2d_normalises_channels():
    ln = LayerNorm2d(5)
    x = torch.randn(2, 5, 3, 4)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (5,), eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(x), expected)


def test_conv2d_keys_norm_and_activation():
    conv = Conv2d(3, 8, 3, padding=1, bias=False, norm=get_norm("FrozenBN", 8), activation=F.relu)
    assert sorted(conv.state_dict()) == [
        "norm.bias",
        "norm.running_mean",
        "norm.running_var",
        "norm.weight",
        "weight",
    ]
    x = torch.randn(2, 3, 5, 5)
    expected = F.relu(conv.norm(F.conv2d(x, conv.weight, padding=1)))
    out = conv(x)
    torch.testing.assert_close(out, expected)
    assert (out >= 0).all() and out.shape == (2, 8, 5, 5)
