"""detrex's four Mask DINO configs, ported by rewriting their import lines with the README's sed
command (and nothing else): they load, build our models (same parameters, state_dict names and
shapes as this project's configs), train 2 iterations on CPU through ``tools/train_net.py`` at
reduced size on real COCO / ADE20K images, and evaluate.

The configs are verbatim copies of detrex's files kept as data in
``fixtures/detrex_maskdino_configs`` (see its README).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detrex_ext.config import LazyConfig, get_config, instantiate
from detrex_ext.data import catalog_snapshot

REPO_ROOT = Path(__file__).resolve().parents[2]
DETREX_CONFIGS = Path(__file__).parent / "fixtures" / "detrex_maskdino_configs"
TRAIN_NET = REPO_ROOT / "tools" / "train_net.py"

# detrex config -> this project's config of the same model
OURS = {
    "maskdino_r50_coco_instance_seg_50ep": "maskdino_r50_coco_instance_seg_50ep",
    "maskdino_r50_instance_seg_50ep": "maskdino_r50_coco_instance_seg_50ep",
    "maskdino_r50_coco_panoptic_seg_50ep": "maskdino_r50_coco_panoptic_seg_50ep",
    "maskdino_r50_ade20k_semantic_seg_160k": "maskdino_r50_ade20k_semantic_seg_160k",
}
IMPORT_LINE = re.compile(r"^\s*(from\s+\S+\s+import\b|import\s)")


def readme_port_command() -> str:
    """The shell command under ``<!-- port:sed -->`` in the README."""
    text = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"<!-- port:sed -->\s*```bash\n(.*?)```", text, re.DOTALL)
    assert block, "README has no <!-- port:sed --> bash block"
    return block.group(1)


@pytest.fixture(scope="module")
def ported(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ported") / "configs"
    shutil.copytree(DETREX_CONFIGS, folder)
    subprocess.run(["bash", "-c", readme_port_command()], cwd=folder, check=True, timeout=60)
    return folder


def test_only_import_lines_change(ported):
    sources = sorted(DETREX_CONFIGS.rglob("*.py"))
    assert len(sources) == 8
    foreign = re.compile(r"^(from|import) (detectron2|detrex)[. ]|^from \.\.\.")
    for source in sources:
        before = source.read_text().splitlines()
        after = (ported / source.relative_to(DETREX_CONFIGS)).read_text().splitlines()
        assert len(before) == len(after)
        changed = [(old, new) for old, new in zip(before, after) if old != new]
        # exactly the imports of detectron2, detrex and detrex's model code changed, each to ours
        assert [old for old, _ in changed] == [line for line in before if foreign.match(line)]
        for _, new in changed:
            assert IMPORT_LINE.match(new) and ("detrex_ext" in new or "detrex_projects" in new)


def _meta_model(cfg):
    with torch.device("meta"):
        return instantiate(cfg.model)


@pytest.mark.parametrize("name", sorted(OURS))
def test_ported_config_builds_our_model(ported, name):
    with catalog_snapshot():
        cfg = LazyConfig.load(str(ported / f"{name}.py"))
        assert set(cfg) == {"model", "dataloader", "optimizer", "lr_multiplier", "train"}
        theirs = _meta_model(cfg)
        ours = _meta_model(get_config(f"maskdino/{OURS[name]}.py"))
    assert type(theirs) is type(ours)
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters())
    assert {k: v.shape for k, v in theirs.state_dict().items()} == {
        k: v.shape for k, v in ours.state_dict().items()
    }
    assert (theirs.num_classes, theirs.semantic_on, theirs.instance_on, theirs.panoptic_on) == (
        ours.num_classes,
        ours.semantic_on,
        ours.instance_on,
        ours.panoptic_on,
    )
    # detrex's WeightedCriterion also weights "_interm" losses of one-stage models, which are
    # never computed; every loss that is computed has our weight
    extra = theirs.criterion.weight_dict.keys() - ours.criterion.weight_dict.keys()
    assert all("_interm" in key for key in extra)
    assert ours.criterion.weight_dict.items() <= theirs.criterion.weight_dict.items()


# Reduced size: a smaller transformer, 128-pixel images, 2 images per batch; the data are real.
SMALL = [
    "model.num_queries=20",
    "model.sem_seg_head.transformer_predictor.num_queries=20",
    "model.params.enc_layers=1",
    "model.params.dec_layers=2",
    "model.params.dn_num=10",
    "model.criterion.num_points=256",
    "model.criterion.matcher.num_points=256",
    "train.max_iter=2",
    "train.log_period=1",
    "train.init_checkpoint=",  # no ImageNet download in tests
    "train.device=cpu",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
]
COCO_SMALL = [
    "dataloader.train.mapper.augmentation.image_size=128",
    "dataloader.test.mapper.augmentation.0.short_edge_length=128",
    "dataloader.test.mapper.augmentation.0.max_size=192",
]
ADE_SMALL = [
    "dataloader.train.dataset.names=ade20k_sem_seg_val",  # the sample has validation images only
    "dataloader.train.mapper.augmentation.min_size_train=[128]",
    "dataloader.train.mapper.augmentation.max_size_train=192",
    "dataloader.train.mapper.augmentation.crop_params.crop_size=[128,128]",
    "dataloader.train.mapper.size_divisibility=128",
    "dataloader.test.mapper.augmentations.0.short_edge_length=128",  # detectron2's DatasetMapper
    "dataloader.test.mapper.augmentations.0.max_size=192",
]
EXPECTED_RESULTS = {
    "maskdino_r50_coco_instance_seg_50ep": ["bbox/AP", "segm/AP"],
    "maskdino_r50_instance_seg_50ep": ["bbox/AP", "segm/AP"],
    "maskdino_r50_coco_panoptic_seg_50ep": [
        "panoptic_seg/PQ",
        "bbox/AP",
        "segm/AP",
        "sem_seg/mIoU",
    ],
    "maskdino_r50_ade20k_semantic_seg_160k": ["sem_seg/mIoU"],
}


def _json_subset(source: Path, target: Path, num_images: int) -> None:
    data = json.loads(source.read_text())
    data["images"] = sorted(data["images"], key=lambda im: im["id"])[:num_images]
    ids = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    target.write_text(json.dumps(data))


def _datasets_root(tmp_path: Path, coco_mini: Path, ade20k_sample: Path) -> Path:
    """A ``$DETREX_DATASETS`` root: COCO with 8 training and 3 validation images of coco_mini
    (instances and panoptic), and the ADE20K sample."""
    root = tmp_path / "datasets"
    coco = root / "coco"
    (coco / "annotations").mkdir(parents=True)
    for split, count in (("train", 8), ("val", 3)):
        for folder in (f"{split}2017", f"panoptic_{split}2017", f"panoptic_semseg_{split}2017"):
            (coco / folder).symlink_to(coco_mini / folder, target_is_directory=True)
        for kind in ("instances", "panoptic"):
            name = f"{kind}_{split}2017.json"
            _json_subset(coco_mini / "annotations" / name, coco / "annotations" / name, count)
    (root / "ADEChallengeData2016").symlink_to(
        ade20k_sample / "ADEChallengeData2016", target_is_directory=True
    )
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OURS))
def test_ported_config_trains_and_evaluates(
    ported, name, tmp_path, coco_mini_root, ade20k_sample_root
):
    datasets = _datasets_root(tmp_path, coco_mini_root, ade20k_sample_root)
    output_dir = tmp_path / "out"
    overrides = [f"train.output_dir={output_dir}", *SMALL]
    overrides += ADE_SMALL if "ade20k" in name else COCO_SMALL
    if "instance" in name:  # detrex sets it to its own output folder at load time
        overrides.append(f"dataloader.evaluator.output_dir={output_dir}/inference")
    command = [sys.executable, str(TRAIN_NET), "--config-file", str(ported / f"{name}.py")]
    env = dict(os.environ, DETREX_DATASETS=str(datasets), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run(
        [*command, *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    records = [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]
    losses = [r["total_loss"] for r in records if "total_loss" in r]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    results = [r for r in records if EXPECTED_RESULTS[name][0] in r][-1]
    for key in EXPECTED_RESULTS[name]:
        assert key in results and (math.isnan(results[key]) or 0 <= results[key] <= 100), key
    # detrex's lambda lr_factor_func cannot be saved; the run goes on and says so
    assert "config.yaml not written" in proc.stdout + proc.stderr
    assert (output_dir / "model_final.pth").is_file()
