"""Lazy access to the dataset metadata Mask DINO needs (class counts, thing classes).

Configs pass a dataset *name* (no live objects in configs); it is resolved through
`detrex_ext.data.MetadataCatalog` when first needed, so the model can be built before the dataset
is registered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["DatasetMetadata", "expected_num_classes"]


def expected_num_classes(metadata: Any) -> int | None:
    """Classes a model trained on this dataset predicts, or None when the metadata is silent.

    detectron2 convention: `stuff_classes` lists every class of panoptic and semantic datasets
    (things included); instance datasets only have `thing_classes`.
    """
    for key in ("stuff_classes", "thing_classes"):
        classes = getattr(metadata, key, None)
        if classes:
            return len(classes)
    return None


class DatasetMetadata:
    """A dataset name (or metadata object) resolved on demand.

    Args:
        source: dataset name, a list of names (the first is used), an object with detectron2
            metadata attributes, or None.
    """

    def __init__(self, source: str | Sequence[str] | Any | None) -> None:
        if isinstance(source, (list, tuple)):
            source = source[0] if source else None
        self.source = source

    @property
    def name(self) -> str | None:
        if isinstance(self.source, str):
            return self.source
        return getattr(self.source, "name", None)

    def get(self) -> Any | None:
        """The metadata object, or None when the dataset is unknown (not registered yet)."""
        if self.source is None:
            return None
        if not isinstance(self.source, str):
            return self.source
        from detrex_ext.data import MetadataCatalog

        try:
            # Built-in names resolve lazily; an unknown name gives empty metadata.
            return MetadataCatalog.get(self.source)
        except KeyError:
            return None

    def check_num_classes(self, num_classes: int) -> None:
        """Raise when the registered dataset has a different class count than the model."""
        metadata = self.get() if isinstance(self.source, str) else self.source
        if metadata is None:
            return
        expected = expected_num_classes(metadata)
        if expected is not None and expected != num_classes:
            raise ValueError(
                f"model.num_classes={num_classes} but dataset {self.name!r} has {expected} "
                "classes (len(stuff_classes) for panoptic/semantic data, else len(thing_classes)). "
                "Set `model.num_classes` (every other num_classes key interpolates it)."
            )

    def thing_ids(self) -> list[int]:
        """Contiguous ids of the thing classes (panoptic inference)."""
        metadata = self.get()
        mapping = getattr(metadata, "thing_dataset_id_to_contiguous_id", None)
        if not mapping:
            raise ValueError(
                f"panoptic inference needs the thing classes of dataset {self.name!r}: register it "
                "first (e.g. detrex_ext.data.register_builtin_datasets(root)) or set "
                "`model.metadata` to a registered panoptic dataset name"
            )
        return sorted(int(v) for v in mapping.values())
