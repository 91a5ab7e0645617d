"""Built-in dataset names and their registration under a data root.

The root is ``$DETREX_DATASETS`` (then ``$DETECTRON2_DATASETS``, then ``./datasets``), laid out
as in detectron2::

    <root>/coco/{train2017,val2017,annotations,panoptic_{train,val}2017,panoptic_semseg_{train,val}2017}
    <root>/ADEChallengeData2016/{images,annotations_detectron2}/{training,validation}
    <root>/cityscapes/{leftImg8bit,gtFine}/{train,val}

Nothing happens on import: a built-in name is registered the first time ``DatasetCatalog`` or
``MetadataCatalog`` is asked for it, or when ``register_builtin_datasets`` is called. Only
paths are recorded; files are read when the dataset dicts are loaded.
"""

from __future__ import annotations

import os
from typing import Callable

from ..catalog import LazyDatasets, add_lazy_datasets, builtin_registration
from .builtin_meta import coco_instance_metadata, coco_panoptic_metadata
from .coco import register_coco_instances
from .coco_panoptic import register_coco_panoptic, register_coco_panoptic_with_sem_seg
from .semantic import register_ade20k_semantic, register_cityscapes_semantic
from .synthetic import register_synthetic_shapes

__all__ = [
    "builtin_dataset_names",
    "get_datasets_root",
    "is_builtin_dataset",
    "register_builtin_dataset",
    "register_builtin_datasets",
    "register_coco_root",
]

COCO_SPLITS = ("train", "val")


def get_datasets_root() -> str:
    """``$DETREX_DATASETS``, else ``$DETECTRON2_DATASETS``, else ``datasets``."""
    return os.environ.get("DETREX_DATASETS", os.environ.get("DETECTRON2_DATASETS", "datasets"))


def register_coco_root(coco_root: str, prefix: str = "coco_2017") -> list[str]:
    """Register a COCO 2017-layout folder under names starting with ``prefix``.

    Registers ``{prefix}_{split}`` (instances), ``{prefix}_{split}_panoptic`` and
    ``{prefix}_{split}_panoptic_with_sem_seg`` for split in train/val, with the COCO classes.
    E.g. ``register_coco_root("../shared/datasets/coco_mini", "coco_mini")``.

    Returns:
        The registered names.
    """
    coco_root = os.fspath(coco_root)
    names = []
    for split in COCO_SPLITS:
        image_root = os.path.join(coco_root, f"{split}2017")
        instances_json = os.path.join(coco_root, "annotations", f"instances_{split}2017.json")
        panoptic_root = os.path.join(coco_root, f"panoptic_{split}2017")
        panoptic_json = os.path.join(coco_root, "annotations", f"panoptic_{split}2017.json")
        sem_seg_root = os.path.join(coco_root, f"panoptic_semseg_{split}2017")
        name = f"{prefix}_{split}"
        register_coco_instances(name, coco_instance_metadata(), instances_json, image_root)
        register_coco_panoptic(
            f"{name}_panoptic",
            coco_panoptic_metadata(),
            image_root,
            panoptic_root,
            panoptic_json,
            instances_json,
        )
        register_coco_panoptic_with_sem_seg(
            f"{name}_panoptic_with_sem_seg",
            coco_panoptic_metadata(),
            image_root,
            panoptic_root,
            panoptic_json,
            sem_seg_root,
            instances_json,
        )
        names += [name, f"{name}_panoptic", f"{name}_panoptic_with_sem_seg"]
    return names


def _register_coco(root: str) -> None:
    register_coco_root(os.path.join(root, "coco"), "coco_2017")


def _register_ade20k(root: str) -> None:
    base = os.path.join(root, "ADEChallengeData2016")
    for split, folder in (("train", "training"), ("val", "validation")):
        register_ade20k_semantic(
            f"ade20k_sem_seg_{split}",
            os.path.join(base, "images", folder),
            os.path.join(base, "annotations_detectron2", folder),
        )


def _register_cityscapes(root: str) -> None:
    base = os.path.join(root, "cityscapes")
    for split in ("train", "val"):
        register_cityscapes_semantic(
            f"cityscapes_fine_sem_seg_{split}",
            os.path.join(base, "leftImg8bit", split),
            os.path.join(base, "gtFine", split),
        )


def _register_synthetic(root: str) -> None:
    del root  # generated, no files
    register_synthetic_shapes("synthetic_shapes_train", num_images=512, seed=0)
    register_synthetic_shapes("synthetic_shapes_val", num_images=64, seed=1)


_GROUPS: dict[str, tuple[Callable[[str], None], tuple[str, ...]]] = {
    "coco": (
        _register_coco,
        tuple(
            f"coco_2017_{split}{suffix}"
            for split in COCO_SPLITS
            for suffix in ("", "_panoptic", "_panoptic_with_sem_seg")
        ),
    ),
    "ade20k": (_register_ade20k, ("ade20k_sem_seg_train", "ade20k_sem_seg_val")),
    "cityscapes": (
        _register_cityscapes,
        ("cityscapes_fine_sem_seg_train", "cityscapes_fine_sem_seg_val"),
    ),
    "synthetic": (_register_synthetic, ("synthetic_shapes_train", "synthetic_shapes_val")),
}


def builtin_dataset_names() -> list[str]:
    """All built-in dataset names."""
    return [name for _, names in _GROUPS.values() for name in names]


def is_builtin_dataset(name: str) -> bool:
    return any(name in names for _, names in _GROUPS.values())


def register_builtin_dataset(name: str, root: str | None = None) -> None:
    """Register the built-in group that contains ``name`` under ``root``."""
    for register, names in _GROUPS.values():
        if name in names:
            with builtin_registration():
                register(root if root is not None else get_datasets_root())
            return
    raise KeyError(f"{name!r} is not a built-in dataset; built-in: {builtin_dataset_names()}")


def register_builtin_datasets(root: str | None = None) -> list[str]:
    """Register every built-in dataset under ``root`` (default: ``get_datasets_root()``).

    Returns:
        The registered names.
    """
    root = os.fspath(root) if root is not None else get_datasets_root()
    with builtin_registration():
        for register, _ in _GROUPS.values():
            register(root)
    return builtin_dataset_names()


# the catalogs register a built-in name when it is first asked for
add_lazy_datasets(LazyDatasets(is_builtin_dataset, register_builtin_dataset, builtin_dataset_names))
