import pytest
import timm
import torch

from detrex_ext.layers import ShapeSpec
from detrex_ext.modeling.backbone import SwinTransformer
from detrex_ext.modeling.backbone.swin import (
    PatchMerging,
    WindowAttention,
    _shift_attention_mask,
    window_partition,
    window_reverse,
)

TINY = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=2)


def test_swin_large_counts_and_key_names():
    with torch.device("meta"):  # no 195M-parameter initialisation on CPU
        model = SwinTransformer(
            pretrain_img_size=384,
            embed_dim=192,
            depths=(2, 2, 18, 2),
            num_heads=(6, 12, 24, 48),
            window_size=12,
            drop_path_rate=0.3,
            ape=False,
            patch_norm=True,
        )
    state = model.state_dict()
    assert len(state) == 357
    assert sum(p.numel() for p in model.parameters()) == 195_201_204
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["patch_embed.proj.weight"] == (192, 3, 4, 4)
    assert shapes["layers.0.blocks.0.attn.relative_position_bias_table"] == (529, 6)
    assert shapes["layers.2.blocks.17.attn.relative_position_index"] == (144, 144)
    assert state["layers.2.blocks.17.attn.relative_position_index"].dtype == torch.int64
    assert shapes["layers.0.downsample.reduction.weight"] == (384, 768)
    assert shapes["layers.2.downsample.norm.weight"] == (3072,)
    assert "layers.3.downsample.reduction.weight" not in state
    assert [shapes[f"norm{i}.weight"] for i in range(4)] == [(192,), (384,), (768,), (1536,)]
    assert model.output_shape() == {
        "res2": ShapeSpec(channels=192, stride=4),
        "res3": ShapeSpec(channels=384, stride=8),
        "res4": ShapeSpec(channels=768, stride=16),
        "res5": ShapeSpec(channels=1536, stride=32),
    }
    assert model.size_divisibility == 32


def test_forward_shapes_with_padding_to_patch_and_window():
    model = SwinTransformer(**{**TINY, "window_size": 3}).eval()
    out = model(torch.randn(2, 3, 70, 45))  # neither a multiple of the patch nor the window
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (2, 16, 18, 12),
        "res3": (2, 32, 9, 6),
        "res4": (2, 64, 5, 3),
        "res5": (2, 128, 3, 2),
    }
    partial = SwinTransformer(**TINY, out_features=("res3",))
    assert list(partial(torch.randn(1, 3, 32, 32))) == ["res3"]
    assert "norm1.weight" in partial.state_dict() and "norm0.weight" not in partial.state_dict()
    with pytest.raises(ValueError, match="out_features"):
        SwinTransformer(**TINY, out_features=("res6",))


def test_shift_attention_mask_hand_built():
    mask = _shift_attention_mask(4, 4, window_size=2, shift_size=1, device=torch.device("cpu"))
    assert mask.shape == (4, 4, 4)  # 4 windows of 2x2 tokens
    # region ids of the 4x4 map: rows/cols split into [0:2], [2], [3]; id = 3 * row_part + col_part
    assert (mask[0] == 0).all()  # top-left window lies in region 0
    # top-right window: tokens (0,2),(0,3),(1,2),(1,3) -> regions 1, 2, 1, 2
    different = torch.tensor([[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]]).bool()
    assert torch.equal(mask[1] == -100, different)
    # bottom-right window: regions 4, 5, 7, 8 -> every pair of distinct tokens is blocked
    assert torch.equal(mask[3] == -100, ~torch.eye(4, dtype=torch.bool))
    assert set(mask.unique().tolist()) == {0.0, -100.0}


def test_window_partition_round_trip():
    x = torch.randn(2, 6, 4, 3)
    windows = window_partition(x, 2)
    assert windows.shape == (12, 4, 3)
    torch.testing.assert_close(windows[1], x[0, 0:2, 2:4].reshape(4, 3))
    torch.testing.assert_close(window_reverse(windows, 2, 6, 4), x)


def test_patch_merging_concatenation_order():
    merge = PatchMerging(dim=2)
    x = torch.randn(1, 4 * 4, 2)
    grid = x.view(1, 4, 4, 2)
    out = merge(x, 4, 4)
    i, j = 1, 0  # output cell (1, 0) gathers input rows 2-3, cols 0-1
    cat = torch.cat(
        [
            grid[0, 2 * i, 2 * j],
            grid[0, 2 * i + 1, 2 * j],
            grid[0, 2 * i, 2 * j + 1],
            grid[0, 2 * i + 1, 2 * j + 1],
        ]
    )
    torch.testing.assert_close(out[0, i * 2 + j], merge.reduction(merge.norm(cat)))
    assert merge(torch.randn(1, 5 * 3, 2), 5, 3).shape == (1, 3 * 2, 4)  # odd sizes are padded


def test_window_attention_matches_naive_softmax():
    attn = WindowAttention(dim=8, window_size=2, num_heads=2).eval()
    torch.nn.init.normal_(attn.relative_position_bias_table)
    x = torch.randn(4, 4, 8)  # 2 images x 2 windows of 4 tokens
    mask = torch.zeros(2, 4, 4)
    mask[1, 0, 3] = mask[1, 3, 0] = -100.0
    qkv = attn.qkv(x).view(4, 4, 3, 2, 4).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * 4**-0.5, qkv[1], qkv[2]
    index = attn.relative_position_index
    bias = attn.relative_position_bias_table[index.view(-1)].view(4, 4, 2).permute(2, 0, 1)
    scores = q @ k.transpose(-2, -1) + bias + mask.repeat(2, 1, 1)[:, None]
    expected = attn.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(4, 4, 8))
    torch.testing.assert_close(attn(x, mask), expected, rtol=1e-5, atol=1e-5)
    # relative index: token 0 = (0, 0), token 3 = (1, 1): offset (-1, -1) -> (0 * 3 + 0)
    assert index[0, 3] == 0 and index[3, 0] == 8 and index[1, 1] == 4


def _timm_to_ours(state):
    """timm keeps stage i's PatchMerging at layers.{i}.downsample; ours at layers.{i-1}.downsample."""
    converted = {}
    for key, value in state.items():
        parts = key.split(".")
        if key.startswith("layers.") and parts[2] == "downsample":
            parts[1] = str(int(parts[1]) - 1)
        if not key.startswith(("head", "norm.")):
            converted[".".join(parts)] = value
    return converted


def test_matches_timm_swin_blocks_end_to_end():
    reference = timm.models.swin_transformer.SwinTransformer(
        img_size=128, patch_size=4, num_classes=0, **TINY
    ).eval()
    model = SwinTransformer(**TINY).eval()
    missing, unexpected = model.load_state_dict(_timm_to_ours(reference.state_dict()), strict=False)
    assert unexpected == []
    assert all(k.startswith("norm") or k.endswith("relative_position_index") for k in missing)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        ours = model(x)
        y = reference.patch_embed(x)
        for i, stage in enumerate(reference.layers):
            y = stage(y)  # NHWC stage output, before our output norm
            expected = getattr(model, f"norm{i}")(y).permute(0, 3, 1, 2)
            torch.testing.assert_close(ours[f"res{i + 2}"], expected, rtol=1e-4, atol=1e-4)


def test_freeze_at_and_train_mode():
    model = SwinTransformer(**TINY, drop_path_rate=0.5, freeze_at=2)
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert not any(p.requires_grad for p in model.layers[0].parameters())
    assert all(p.requires_grad for p in model.layers[1].parameters())
    model.train()
    assert not model.layers[0].training and model.layers[1].training
