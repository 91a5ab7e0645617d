"""Every shipped Mask DINO config: loads, takes overrides, saves and reloads, follows the
official recipe, instantiates to the official parameter counts, and (reduced) trains on CPU."""

from __future__ import annotations

import pytest
import torch
from maskdino_test_utils import (
    MODEL_CONFIGS,
    load_config,
    semantic_batch,
    two_image_batch,
)
from omegaconf import OmegaConf

from detrex_ext.config import LazyConfig, instantiate, list_configs
from detrex_ext.solver import ModuleNameLrFactor

# Official facts (spec sections 1.2, 2.3, 2.4, 8): parameters, state_dict entries, iterations,
# lr milestones, AMP, task switches.
EXPECTED = {
    "maskdino_r50_coco_instance_seg_50ep": (52_058_004, 720, 368750, [327778, 355092], True),
    "maskdino_r50_coco_instance_seg_50ep_hid1024": (
        43_816_436,
        716,
        368750,
        [327778, 355092],
        True,
    ),
    "maskdino_r50_coco_panoptic_seg_50ep": (52_085_193, 720, 368750, [327778, 355092], True),
    "maskdino_r50_ade20k_semantic_seg_160k": (43_812_299, 714, 160000, [135000, 150000], False),
    "maskdino_r50_cityscapes_semantic_seg_90k": (43_798_216, 767, 90000, [80000, 87000], False),
    "maskdino_swinl_coco_instance_seg_50ep": (222_799_144, 816, 368750, [327778, 355092], True),
    "maskdino_swinl_coco_instance_seg_50ep_no_mask_enhance": (
        222_799_144,
        816,
        368750,
        [327778, 355092],
        True,
    ),
    "maskdino_swinl_coco_panoptic_seg_50ep": (222_826_333, 816, 368750, [327778, 355092], True),
}
TASKS = {  # (instance_on, semantic_on, panoptic_on, box init, num_classes, num_queries)
    "maskdino_r50_coco_instance_seg_50ep": (True, False, False, "mask2box", 80, 300),
    "maskdino_r50_coco_instance_seg_50ep_hid1024": (True, False, False, "bitmask", 80, 300),
    "maskdino_r50_coco_panoptic_seg_50ep": (True, True, True, "no", 133, 300),
    "maskdino_r50_ade20k_semantic_seg_160k": (False, True, False, "no", 150, 100),
    "maskdino_r50_cityscapes_semantic_seg_90k": (False, True, False, "no", 19, 100),
    "maskdino_swinl_coco_instance_seg_50ep": (True, False, False, "bitmask", 80, 300),
    "maskdino_swinl_coco_instance_seg_50ep_no_mask_enhance": (True, False, False, "no", 80, 300),
    "maskdino_swinl_coco_panoptic_seg_50ep": (True, True, True, "no", 133, 300),
}


SHIPPED = sorted(
    c[len("maskdino/") : -len(".py")]
    for c in list_configs()
    if c.startswith("maskdino/maskdino") and c.endswith(".py")
)


def test_every_released_model_has_a_config():
    assert set(MODEL_CONFIGS) == set(EXPECTED) == set(TASKS)
    assert set(MODEL_CONFIGS) <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_overrides_save_and_reload(name, tmp_path):
    cfg = load_config(name)
    # No mandatory '???' value anywhere: optimizer.params.model is set by the launcher and is
    # not in the config, as in detectron2/detrex (their LazyConfig.save cannot write '???').
    assert "model" not in cfg.optimizer.params and not OmegaConf.missing_keys(cfg)
    LazyConfig.apply_overrides(cfg, ["train.max_iter=100", "model.num_classes=7"])
    path = tmp_path / "config.yaml"
    LazyConfig.save(cfg, str(path))
    again = LazyConfig.load(str(path))
    assert again.train.max_iter == 100
    # num_classes has one source: the head, decoder and criterion follow it after reload.
    assert again.model.sem_seg_head.num_classes == 7
    assert again.model.sem_seg_head.transformer_predictor.num_classes == 7
    assert again.model.criterion.num_classes == 7
    # The schedule's length follows train.max_iter; milestones stay absolute.
    assert again.lr_multiplier.max_iter == 100
    LazyConfig.save(again, str(tmp_path / "again.yaml"))
    assert (tmp_path / "again.yaml").read_text() == path.read_text()


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_official_recipe(name):
    cfg = load_config(name)
    _, _, max_iter, milestones, amp = EXPECTED[name]
    instance_on, semantic_on, panoptic_on, box_init, num_classes, queries = TASKS[name]
    assert cfg.train.max_iter == max_iter
    assert cfg.train.amp.enabled is amp
    assert cfg.train.clip_grad.enabled and cfg.train.clip_grad.params.max_norm == 0.01
    assert cfg.train.clip_grad.params.norm_type == 2.0
    assert cfg.dataloader.train.total_batch_size == 16
    assert cfg.optimizer.lr == 1e-4 and cfg.optimizer.weight_decay == 0.05
    assert tuple(cfg.optimizer.betas) == (0.9, 0.999)
    assert cfg.optimizer.params.weight_decay_norm == 0.0
    assert cfg.optimizer.params.weight_decay_embed == 0.0
    factor = instantiate(cfg.optimizer.params.lr_factor_func)
    assert isinstance(factor, ModuleNameLrFactor)
    assert factor("backbone.res2.0.conv1.weight") == 0.1
    assert factor("sem_seg_head.predictor.class_embed.weight") == 1.0
    schedule = cfg.lr_multiplier.scheduler
    assert list(schedule.milestones) == milestones
    assert list(schedule["values"]) == [1.0, 0.1, 0.01]
    model = cfg.model
    assert (model.instance_on, model.semantic_on, model.panoptic_on) == (
        instance_on,
        semantic_on,
        panoptic_on,
    )
    assert model.sem_seg_head.transformer_predictor.initialize_box_type == box_init
    assert model.num_classes == num_classes and model.num_queries == queries
    # Every consumer interpolates num_classes from the one place that holds it.
    assert model.sem_seg_head.num_classes == num_classes
    assert model.sem_seg_head.transformer_predictor.num_classes == num_classes
    assert model.criterion.num_classes == num_classes


def test_recipe_values_follow_interpolations():
    cfg = load_config("maskdino_r50_coco_instance_seg_50ep")
    LazyConfig.apply_overrides(cfg, ["train.output_dir=/tmp/run1"])
    assert cfg.dataloader.evaluator.output_dir == "/tmp/run1/inference"
    schedule = instantiate(cfg.lr_multiplier)
    # x0.1 at 327,778 and 355,092 of 368,750 (fvcore scale: iteration / max_iter).
    assert schedule(327777 / 368750) == pytest.approx(1.0)
    assert schedule(327779 / 368750) == pytest.approx(0.1)
    assert schedule(355093 / 368750) == pytest.approx(0.01)


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_full_size_parameter_counts(name):
    params, entries, *_ = EXPECTED[name]
    cfg = load_config(name)
    with torch.device("meta"):
        model = instantiate(cfg.model)
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == entries


def test_reference_model_instantiates_for_real():
    model = instantiate(load_config("maskdino_r50_coco_instance_seg_50ep").model)
    assert sum(p.numel() for p in model.parameters()) == 52_058_004
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_reduced_config_trains_and_infers(name):
    model = instantiate(load_config(name, reduced=True).model)
    semantic = not model.instance_on
    batch = semantic_batch(model.num_classes) if semantic else two_image_batch(model.num_classes)
    model.train()
    losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.sem_seg_head.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        outputs = model(batch)
    expected = {
        k
        for k, on in [
            ("instances", model.instance_on),
            ("sem_seg", model.semantic_on),
            ("panoptic_seg", model.panoptic_on),
        ]
        if on
    }
    assert [set(o) for o in outputs] == [expected, expected]


def test_num_classes_has_one_source():
    cfg = load_config("maskdino_r50_ade20k_semantic_seg_160k", reduced=True)
    LazyConfig.apply_overrides(cfg, ["model.num_classes=7", "model.metadata=null"])
    model = instantiate(cfg.model)
    predictor = model.sem_seg_head.predictor
    assert model.criterion.num_classes == predictor.num_classes == 7
    assert predictor.class_embed.out_features == 8  # softmax CE: one "no object" logit
    assert predictor.label_enc.num_embeddings == 7
    assert model.criterion.empty_weight.shape == (8,)


def test_num_classes_disagreeing_with_dataset_metadata_is_a_clear_error():
    cfg = load_config("maskdino_r50_coco_instance_seg_50ep", reduced=True)
    LazyConfig.apply_overrides(cfg, ["model.num_classes=7"])
    with pytest.raises(Exception, match=r"num_classes=7.*coco_2017_train.*80 classes"):
        instantiate(cfg.model)


def test_a_leaf_num_classes_override_is_a_clear_error():
    cfg = load_config("maskdino_r50_coco_instance_seg_50ep", reduced=True)
    LazyConfig.apply_overrides(cfg, ["model.criterion.num_classes=81"])
    with pytest.raises(Exception, match=r"model.num_classes=80.*criterion.*81"):
        instantiate(cfg.model)
