"""Official-layout checkpoints load with zero missing / unexpected keys, whichever aliases of
the shared box MLP and decoder norm they carry, bare or wrapped, directly or via the
checkpointer and `tools/convert_checkpoint.py`."""

from __future__ import annotations

import importlib.util
import logging
import re

import pytest
import torch
from maskdino_test_utils import load_config

from detrex_ext.checkpoint import DetectionCheckpointer
from detrex_ext.config import instantiate

P = "sem_seg_head.predictor."
BOX_ALIAS = re.compile(
    r"^sem_seg_head\.predictor\.(_bbox_embed|bbox_embed\.\d+|decoder\.bbox_embed\.\d+)\."
)
NORM_ALIAS = re.compile(r"^sem_seg_head\.predictor\.(decoder_norm|decoder\.norm)\.")


def keep_aliases(state_dict: dict, box: str | None, norm: str | None) -> dict:
    """Drop every alias of the box MLP but those under `box` (a regex on the alias), likewise
    the decoder norm; None keeps all."""
    out = {}
    for key, value in state_dict.items():
        for pattern, keep in ((BOX_ALIAS, box), (NORM_ALIAS, norm)):
            match = pattern.match(key)
            if match and keep is not None and not re.fullmatch(keep, match.group(1)):
                break
        else:
            out[key] = value
    return out


LAYOUTS = {
    "all_aliases": (None, None),
    "detrex_decoder_bbox_embed": (r"decoder\.bbox_embed\.\d+", r"decoder_norm"),
    "module_only": (r"_bbox_embed", r"decoder\.norm"),
    "predictor_list_only": (r"bbox_embed\.\d+", r"decoder_norm"),
    "one_decoder_alias": (r"decoder\.bbox_embed\.0", r"decoder\.norm"),
}


@pytest.fixture(scope="module")
def source_and_target():
    torch.manual_seed(1)
    cfg = load_config("maskdino_r50_coco_instance_seg_50ep", reduced=True)
    source = instantiate(cfg.model)
    # Give every entry a distinct value so a missed alias cannot go unnoticed.
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    torch.manual_seed(2)
    target = instantiate(cfg.model)
    return source, target


def assert_same_weights(model, reference) -> None:
    ref = reference.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, ref[key]), key


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_alias_layouts_load_strictly(layout, source_and_target):
    source, target = source_and_target
    state_dict = keep_aliases(source.state_dict(), *LAYOUTS[layout])
    if layout != "all_aliases":
        assert len(state_dict) < len(source.state_dict())
    result = target.load_state_dict(state_dict, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert_same_weights(target, source)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_adapt_gives_exactly_the_model_keys(layout, source_and_target):
    source, target = source_and_target
    state_dict = keep_aliases(source.state_dict(), *LAYOUTS[layout])
    state_dict.pop("criterion.empty_weight")
    wrapped = {"model": {"module." + k: v for k, v in state_dict.items()}, "iteration": 7}
    adapted = target.adapt_checkpoint_state_dict(wrapped)
    assert set(adapted) == set(target.state_dict())
    # Idempotent: adapting an adapted dict changes nothing.
    again = target.adapt_checkpoint_state_dict(adapted)
    assert set(again) == set(adapted) and all(again[k] is adapted[k] for k in adapted)


def test_preferred_alias_wins_when_aliases_disagree(source_and_target):
    source, target = source_and_target
    state_dict = dict(source.state_dict())
    state_dict[P + "_bbox_embed.layers.0.weight"] = torch.zeros_like(
        state_dict[P + "_bbox_embed.layers.0.weight"]
    )
    target.load_state_dict(state_dict, strict=True)
    expected = source.state_dict()[P + "decoder.bbox_embed.0.layers.0.weight"]
    assert torch.equal(target.sem_seg_head.predictor._bbox_embed.layers[0].weight, expected)


def test_missing_empty_weight_and_extra_pixel_stats_are_tolerated(source_and_target):
    source, target = source_and_target
    state_dict = dict(source.state_dict())
    del state_dict["criterion.empty_weight"]
    state_dict["pixel_mean"] = torch.zeros(3, 1, 1)
    state_dict["pixel_std"] = torch.ones(3, 1, 1)
    result = target.load_state_dict(state_dict, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert target.criterion.empty_weight[-1] == pytest.approx(0.1)
    assert target.pixel_std[0, 0, 0] == pytest.approx(58.395)


@pytest.mark.parametrize("container", ["bare", "wrapped", "ddp_prefix"])
def test_checkpointer_loads_official_layout(container, source_and_target, tmp_path, caplog):
    source, target = source_and_target
    state_dict = keep_aliases(source.state_dict(), *LAYOUTS["detrex_decoder_bbox_embed"])
    if container == "ddp_prefix":
        state_dict = {"module." + k: v for k, v in state_dict.items()}
    payload = state_dict if container == "bare" else {"model": state_dict, "iteration": 3}
    path = tmp_path / "official.pth"
    torch.save(payload, path)
    with torch.no_grad():
        for p in target.parameters():
            p.zero_()
    with caplog.at_level(logging.WARNING, logger="detrex_ext.checkpoint"):
        DetectionCheckpointer(target).load(str(path))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert_same_weights(target, source)


def test_convert_checkpoint_tool(source_and_target, tmp_path):
    source, target = source_and_target
    spec = importlib.util.spec_from_file_location(
        "convert_checkpoint", "tools/convert_checkpoint.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    src, dst = tmp_path / "in.pth", tmp_path / "out.pth"
    torch.save(
        {"model": keep_aliases(source.state_dict(), *LAYOUTS["module_only"]), "iteration": 1},
        src,
    )
    assert tool.main(["official", str(src), str(dst)]) == 0
    converted = torch.load(dst, weights_only=True)
    assert set(converted) == {"model"}
    assert set(converted["model"]) == set(source.state_dict())
    result = target.load_state_dict(converted["model"], strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert_same_weights(target, source)


def test_layout_mismatch_is_explained(caplog):
    cfg = load_config("maskdino_r50_coco_instance_seg_50ep", reduced=True)
    four_levels = instantiate(cfg.model)
    cfg.model.sem_seg_head.pixel_decoder.total_num_feature_levels = 3
    cfg.model.num_classes = 7
    cfg.model.metadata = None
    three_levels = instantiate(cfg.model)
    with caplog.at_level(logging.WARNING):
        three_levels.adapt_checkpoint_state_dict(four_levels.state_dict())
    text = caplog.text
    assert "4 feature levels but the model has 3" in text
    assert "class head has 80 outputs but the model's has 7" in text


def test_full_reference_model_loads_detrex_layout(tmp_path):
    cfg = load_config("maskdino_r50_coco_instance_seg_50ep")
    source = instantiate(cfg.model)
    state_dict = keep_aliases(source.state_dict(), *LAYOUTS["detrex_decoder_bbox_embed"])
    # 9 + 1 box-MLP aliases (6 entries each) and decoder.norm (2 entries) are absent.
    assert len(source.state_dict()) == 720 and len(state_dict) == 720 - 10 * 6 - 2
    target = instantiate(cfg.model)
    result = target.load_state_dict(target.adapt_checkpoint_state_dict(state_dict), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert_same_weights(target, source)
