"""The official Mask DINO as a speed reference: its published H200 figures, and the official model
itself, built from an exported source tree, for side-by-side CPU timings (``tools/benchmark.py
--official-root``).

Building the official model needs the user's own detectron2 build (not a dependency of this
project; imported only here, only when asked) and an export of IDEA-Research/MaskDINO. Its compiled
deformable-attention extension is not needed: a stand-in module is registered and the official
``MSDeformAttnFunction`` runs the official file's own ``ms_deform_attn_core_pytorch`` (what the
official code falls back to without CUDA). The official code calls ``.cuda()`` / ``.to("cuda")``
during training; ``cpu_only_tensor_moves`` turns those into CPU no-ops while the official model
runs.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate
from torch import nn

__all__ = [
    "OFFICIAL_H200",
    "OFFICIAL_H200_RECIPE",
    "OFFICIAL_PRECISION",
    "OFFICIAL_YAML",
    "build_official_model",
    "cpu_only_tensor_moves",
    "format_h200_comparison",
    "official_figures",
    "to_official_inputs",
]

# The official Mask DINO (IDEA-Research/MaskDINO 3831d851 on detectron2 02b5c4e2, its compiled CUDA
# deformable attention) on one NVIDIA H200, torch 2.11.0+cu130, random init, measured 2026-11-25:
# the team note ``whole_model_profile.md``. Recipe: training batch 2 at 1024x1024 with 12 and 7
# rectangles, fp16 autocast + GradScaler, AdamW, clipping at 0.01; inference batch 1 at 800x1216
# in fp32. Times in ms, memory in GB as the note prints it (read here as 10^9 bytes).
OFFICIAL_H200_RECIPE = {"train": (2, 1024, (12, 7)), "inference": (800, 1216)}
OFFICIAL_H200 = {
    "maskdino_r50_coco_instance_seg_50ep": {
        "parameters": 52_058_004,
        "training": {
            "step": 455.0,
            "forward": 271.0,
            "backward": 183.0,
            "optimizer": 9.0,
            "peak_memory_gb": 11.9,
        },
        "inference": {"end_to_end": 58.7, "compute_only": 48.5, "peak_memory_gb": 4.9},
    },
    "maskdino_r50_coco_panoptic_seg_50ep": {
        "parameters": 52_085_193,
        "training": {"step": 363.0, "peak_memory_gb": 11.9},
        "inference": {"end_to_end": 230.2, "compute_only": 45.0},
    },
    "maskdino_swinl_coco_instance_seg_50ep": {
        "parameters": 222_799_144,
        "training": {"step": 781.0, "peak_memory_gb": 44.0},
        "inference": {"end_to_end": 169.8, "compute_only": 151.6},
    },
}
OFFICIAL_PRECISION = {"training": "fp16 AMP", "inference": "fp32"}

# Our config name -> the official yaml (under configs/ of the official tree) of the same model.
OFFICIAL_YAML = {
    "maskdino_r50_coco_instance_seg_50ep": (
        "coco/instance-segmentation/maskdino_R50_bs16_50ep_3s_dowsample1_2048.yaml"
    ),
    "maskdino_r50_coco_instance_seg_50ep_hid1024": (
        "coco/instance-segmentation/maskdino_R50_bs16_50ep_3s.yaml"
    ),
    "maskdino_r50_coco_panoptic_seg_50ep": (
        "coco/panoptic-segmentation/maskdino_R50_bs16_50ep_3s_dowsample1_2048.yaml"
    ),
    "maskdino_r50_ade20k_semantic_seg_160k": (
        "ade20k/semantic-segmentation/maskdino_R50_bs16_160k_steplr.yaml"
    ),
    "maskdino_swinl_coco_instance_seg_50ep": (
        "coco/instance-segmentation/swin/maskdino_R50_bs16_50ep_4s_dowsample1_2048.yaml"
    ),
}


def _config_name(config: Any) -> str:
    return Path(str(config)).stem


def official_figures(config: Any) -> dict[str, Any] | None:
    """The official H200 figures of a config (file path, packaged path or name), or None."""
    return OFFICIAL_H200.get(_config_name(config))


@contextlib.contextmanager
def cpu_only_tensor_moves() -> Iterator[None]:
    """Make ``Tensor.cuda()`` a no-op and ``Tensor.to("cuda"...)`` stay on the CPU (the official
    training code hard-codes both), restoring them on exit."""
    original_cuda, original_to = torch.Tensor.cuda, torch.Tensor.to

    def on_cpu(device: Any) -> Any:
        is_cuda = isinstance(device, (str, torch.device)) and str(device).startswith("cuda")
        return "cpu" if is_cuda else device

    def to(self, *args, **kwargs):
        args = tuple(on_cpu(a) for a in args)
        if "device" in kwargs:
            kwargs["device"] = on_cpu(kwargs["device"])
        return original_to(self, *args, **kwargs)

    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.Tensor.to = to
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.Tensor.to = original_cuda, original_to


def _import_official(official_root: Path) -> types.SimpleNamespace:
    try:
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model
        from detectron2.projects.deeplab import add_deeplab_config
    except ImportError as error:
        raise ImportError(
            "--official-root needs detectron2 importable in this Python environment (build it "
            f"from source: https://github.com/facebookresearch/detectron2); import failed: {error}"
        ) from error
    # Stand-in for the compiled CUDA extension; the official function falls back to PyTorch.
    sys.modules.setdefault("MultiScaleDeformableAttention", types.ModuleType("MSDA stand-in"))
    if str(official_root) not in sys.path:
        sys.path.insert(0, str(official_root))
    import maskdino  # noqa: F401  (registers the official meta-architecture and heads)
    from maskdino import add_maskdino_config
    from maskdino.modeling.pixel_decoder.ops.functions import ms_deform_attn_func

    def core_pytorch(value, shapes, level_start_index, locations, weights, im2col_step):
        return ms_deform_attn_func.ms_deform_attn_core_pytorch(value, shapes, locations, weights)

    ms_deform_attn_func.MSDeformAttnFunction.apply = staticmethod(core_pytorch)
    return types.SimpleNamespace(
        get_cfg=get_cfg,
        build_model=build_model,
        add_deeplab_config=add_deeplab_config,
        add_maskdino_config=add_maskdino_config,
    )


def build_official_model(
    official_root: str | Path, config: Any, state_dict: dict[str, torch.Tensor]
) -> nn.Module:
    """The official model of ``config`` (our config name or path) on the CPU, in eval mode, with
    ``state_dict`` (ours: the key names are the official ones) loaded strictly.

    Raises:
        ValueError: no official yaml is known for the config, or the tree lacks it.
    """
    name, root = _config_name(config), Path(official_root).expanduser()
    if name not in OFFICIAL_YAML:
        raise ValueError(
            f"no official Mask DINO config is known for {name!r}; --official-root works with: "
            f"{', '.join(OFFICIAL_YAML)}"
        )
    yaml = root / "configs" / OFFICIAL_YAML[name]
    if not yaml.is_file():
        raise ValueError(
            f"{yaml} does not exist: --official-root must be an exported IDEA-Research/MaskDINO "
            "tree (the folder holding maskdino/ and configs/)"
        )
    official = _import_official(root)
    cfg = official.get_cfg()
    official.add_deeplab_config(cfg)
    official.add_maskdino_config(cfg)
    cfg.merge_from_file(str(yaml))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.freeze()
    model = official.build_model(cfg)
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=True)
    return model.eval()


def to_official_inputs(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our model inputs as the official model takes them: ``instances`` become detectron2
    ``Instances`` (gt_masks as uint8, as the official mappers hand them over)."""
    from detectron2.structures import Boxes, Instances

    converted = []
    for sample in batch:
        sample = dict(sample)
        if "instances" in sample:
            ours = sample["instances"]
            theirs = Instances(tuple(ours.image_size))
            theirs.gt_boxes = Boxes(ours.gt_boxes.tensor.clone())
            theirs.gt_classes = ours.gt_classes.clone()
            masks = ours.gt_masks
            masks = masks.tensor if hasattr(masks, "tensor") else masks
            theirs.gt_masks = masks.to(torch.uint8)
            sample["instances"] = theirs
        converted.append(sample)
    return converted


# ----------------------------------------------------------------------------- the H200 figures


def _size(values) -> str:
    return "x".join(str(v) for v in values)


def _recipe_differences(results: dict[str, Any]) -> list[str]:
    differences = []
    training, inference = results.get("training"), results.get("inference")
    if training:
        ours = (training["batch_size"], training["image_size"][0], training["image_size"][1])
        batch, size, counts = OFFICIAL_H200_RECIPE["train"]
        if ours != (batch, size, size) or tuple(training["instances_per_image"]) != counts:
            differences.append(f"training batch {batch} @ {size}x{size} with {counts} instances")
    if inference and tuple(results["inference_size"]) != OFFICIAL_H200_RECIPE["inference"]:
        differences.append(f"inference at {_size(OFFICIAL_H200_RECIPE['inference'])}")
    return differences


def format_h200_comparison(results: dict[str, Any]) -> str:
    """The official code's H200 figures next to ours; speed-ups (official / ours; for memory:
    how many times less we use) only when ours ran on an H200 with the same recipe."""
    official = official_figures(results["config"])
    precisions = results["precisions"]
    on_cuda = results["device"].startswith("cuda")
    differences = _recipe_differences(results)
    ratios = "H200" in results["device_name"] and not differences
    headers = ["figure", "official H200", *(f"ours {p}" for p in precisions)]
    if ratios:
        headers += [f"speed-up {p}" for p in precisions]
    labels = {
        "step": "training step (ms)",
        "forward": "- forward incl. losses (ms)",
        "backward": "- backward (ms)",
        "optimizer": "- optimizer (ms)",
        "end_to_end": "inference end to end (ms)",
        "compute_only": "inference compute only (ms)",
    }
    rows = []
    for section in ("training", "inference"):
        if not results.get(section):
            continue
        for key, reference in official[section].items():
            if key == "peak_memory_gb":
                if not on_cuda:
                    continue
                label = f"{section} peak memory (GB)"
                ours = [results[section][p]["peak_memory_mib"] * 2**20 / 1e9 for p in precisions]
            else:
                label = labels[key]
                ours = [results[section][p][key]["median_ms"] for p in precisions]
            row = [label, f"{reference:g} ({OFFICIAL_PRECISION[section]})", *ours]
            if ratios:
                row += [f"{reference / v:.2f}x" if v > 0 else "n/a" for v in ours]
            rows.append(row)
    lines = [
        "official Mask DINO on one H200 (team note whole_model_profile.md) vs this run:",
        tabulate(rows, headers=headers, floatfmt=".1f"),
    ]
    if ratios:
        lines.append("speed-up = official / ours (for memory: how many times less we use)")
    if "H200" not in results["device_name"]:
        lines.append(
            f"note: this run is on {results['device_name']}, not an H200: the official figures "
            "are for reference only, no speed-up is computed"
        )
    if differences:
        lines.append(f"note: the official recipe is {'; '.join(differences)}: no speed-up computed")
    if results["parameters"] != official["parameters"]:
        lines.append(
            f"note: this model has {results['parameters']:,} parameters, the official "
            f"{official['parameters']:,}: the configs differ (overrides?)"
        )
    elif results["overrides"]:
        lines.append(f"note: config overrides were given: {' '.join(results['overrides'])}")
    return "\n".join(lines)
