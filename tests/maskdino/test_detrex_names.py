"""The names detrex's Mask DINO configs use, each with detrex's signature and behaviour:
WeightedCriterion, Mask DINO's HungarianMatcher (panoptic_on), the decoder's official options,
and detrex_ext.data.dataset_mappers (transform builders and mapper keywords)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import detrex_ext.data.transforms as T
from detrex_ext.data import Metadata
from detrex_ext.data.dataset_mappers import (
    MaskFormerSemanticDatasetMapper,
    coco_instance_transform_gen,
    coco_panoptic_transform_gen,
    maskformer_semantic_transform_gen,
)
from detrex_ext.modeling import FocalClassCost, GIoUBoxCost, L1BoxCost, MaskBCECost, MaskDiceCost
from detrex_projects.maskdino.modeling import HungarianMatcher, MaskDINODecoder, WeightedCriterion
from detrex_projects.maskdino.modeling.matcher import ThingOnlyBoxCost


def _criterion(**kwargs):
    args = dict(
        num_classes=3,
        matcher=HungarianMatcher(cost_class=4, cost_mask=5, cost_dice=5, num_points=16),
        weight_dict={},
        eos_coef=0.1,
        losses=["labels", "masks", "boxes"],
        num_points=16,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
    )
    return WeightedCriterion(**{**args, **kwargs})


def test_weighted_criterion_builds_the_weights_by_hand():
    criterion = _criterion(dn="standard", dec_layers=1, class_weight=2.0)
    # 5 base keys, 5 "_interm"; "_dn" for the 8 keys other than exactly loss_mask / loss_dice
    # (loss_mask_interm gets one, as in detrex); "_0" for all 18
    base = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    assert len(criterion.weight_dict) == 36
    assert {k: criterion.weight_dict[k] for k in base} == base
    assert criterion.weight_dict["loss_ce_interm_dn_0"] == 2.0
    assert "loss_mask_dn" not in criterion.weight_dict
    assert criterion.weight_dict["loss_mask_interm_dn"] == 5.0
    assert criterion.dn_losses == ["labels", "boxes"]
    assert _criterion(dn="seg", dec_layers=9).dn_losses == ["labels", "masks", "boxes"]
    assert _criterion(dn="no").dn_losses == []
    given = _criterion(weight_dict={"loss_ce": 1.0}, dn="seg", dn_losses=["labels"])
    assert given.weight_dict == {"loss_ce": 1.0} and given.dn_losses == ["labels"]


def test_maskdino_matcher_terms_follow_the_official_order():
    matcher = HungarianMatcher(4.0, 5.0, 5.0, 12544, 5.0, 2.0)
    kinds = [(type(c), c.weight) for c in matcher.costs]
    assert kinds == [
        (MaskBCECost, 5.0),
        (FocalClassCost, 4.0),
        (MaskDiceCost, 5.0),
        (L1BoxCost, 5.0),
        (GIoUBoxCost, 2.0),
    ]
    assert matcher.num_points == 12544
    panoptic = HungarianMatcher(4.0, 5.0, 5.0, 16, 5.0, 2.0, panoptic_on=True)
    assert [type(c) for c in panoptic.costs[3:]] == [ThingOnlyBoxCost, ThingOnlyBoxCost]


def test_thing_only_box_cost_by_hand():
    pred = {"pred_boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]])}
    target = {
        "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.9, 0.9, 0.1, 0.1]]),
        "labels": torch.tensor([3, 100]),  # a thing, then a stuff class
    }
    cost = ThingOnlyBoxCost(L1BoxCost(5.0), num_thing_classes=80)(pred, target)
    # thing column: |0|=0 and 0.4+0.4+0.1+0.1=1.0; stuff column: their mean 0.5
    torch.testing.assert_close(cost, torch.tensor([[0.0, 0.5], [1.0, 0.5]]))
    only_stuff = {"boxes": target["boxes"], "labels": torch.tensor([90, 100])}
    assert (ThingOnlyBoxCost(L1BoxCost())(pred, only_stuff) == 0).all()


def test_decoder_accepts_only_the_official_options():
    common = dict(num_classes=3, hidden_dim=32, num_queries=4, dim_feedforward=32, dec_layers=1)
    common.update(mask_dim=32, in_channels=32, dn_num=2, total_num_feature_levels=1)
    decoder = MaskDINODecoder(**common, mask_classification=True, activation="relu", nhead=4)
    assert decoder.decoder.layers[0].cross_attn.num_heads == 4  # `nhead`: the layers' heads
    decoder.set_num_classes(5)
    assert (decoder.class_embed.out_features, decoder.label_enc.num_embeddings) == (5, 5)
    assert decoder.dn_generator.num_classes == 5 == decoder.num_classes
    for name, value in [("activation", "gelu"), ("dec_layer_share", True)]:
        with pytest.raises(ValueError, match=f"only {name}="):
            MaskDINODecoder(**common, **{name: value})


def test_transform_gens_are_detrex_recipes():
    lsj = coco_instance_transform_gen(1024, 0.1, 2.0, "horizontal")
    assert [type(a) for a in lsj] == [T.RandomFlip, T.ResizeScale, T.FixedSizeCrop]
    assert (lsj[1].min_scale, lsj[1].max_scale, lsj[2].crop_size) == (0.1, 2.0, (1024, 1024))
    assert [type(a) for a in coco_panoptic_transform_gen(512, 0.5, 1.5, "none")] == [
        T.ResizeScale,
        T.FixedSizeCrop,
    ]
    with pytest.raises(ValueError, match="training augmentations only"):
        coco_instance_transform_gen(1024, 0.1, 2.0, is_train=False)
    semantic = maskformer_semantic_transform_gen(
        min_size_train=[256, 512],
        max_size_train=1024,
        min_size_train_sampling="choice",
        enabled_crop=True,
        crop_params={
            "crop_type": "absolute",
            "crop_size": (64, 64),
            "single_category_max_area": 1.0,
        },
        color_aug_ssd=True,
        img_format="RGB",
    )
    assert [type(a) for a in semantic] == [
        T.ResizeShortestEdge,
        T.RandomCrop_CategoryAreaConstraint,
        T.ColorAugSSD,
        T.RandomFlip,
    ]
    assert semantic[0].short_edge_length == (256, 512) and not semantic[0].is_range
    no_crop = maskformer_semantic_transform_gen(512, 1024, "choice", False, {}, False, "RGB")
    assert [type(a) for a in no_crop] == [T.ResizeShortestEdge, T.RandomFlip]


def test_semantic_mapper_takes_detrex_keywords(tmp_path):
    from PIL import Image

    image = np.full((8, 8, 3), 50, dtype=np.uint8)
    labels = np.full((8, 8), 7, dtype=np.uint8)
    labels[:, 4:] = 3
    Image.fromarray(image).save(tmp_path / "a.jpg")
    Image.fromarray(labels).save(tmp_path / "a.png")
    mapper = MaskFormerSemanticDatasetMapper(
        is_train=True,
        meta=Metadata(name="m", ignore_label=7),
        augmentation=[],
        image_format="RGB",
        size_divisibility=16,
    )
    record = {"file_name": str(tmp_path / "a.jpg"), "sem_seg_file_name": str(tmp_path / "a.png")}
    record.update(height=8, width=8)
    out = mapper(record)
    assert out["image"].shape == (3, 16, 16)
    assert out["instances"].gt_classes.tolist() == [3]  # 7 is meta's ignore_label
    assert (out["sem_seg"][8:] == 7).all()  # padding is ignore_label too
    with pytest.raises(ValueError, match="not both"):
        MaskFormerSemanticDatasetMapper(augmentation=[], augmentations=[])
