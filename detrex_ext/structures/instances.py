"""``Instances``: per-image fields of equal length (boxes, classes, masks, scores...)."""

from __future__ import annotations

import itertools
from typing import Any

import torch


class Instances:
    """The objects of one image, as named fields that all have the same length N.

    Fields are set as attributes (``inst.gt_boxes = Boxes(...)``) and can be any object with
    ``__len__`` and ``__getitem__`` (tensors ``[N, ...]``, ``Boxes``, ``BitMasks``, lists).
    ``image_size`` is ``(height, width)``.

    Example::

        inst = Instances((480, 640), gt_classes=torch.tensor([3, 7]))
        inst.gt_boxes = Boxes(torch.rand(2, 4))
        big = inst[inst.gt_boxes.area() > 10]
    """

    def __init__(self, image_size: tuple[int, int], **fields: Any):
        self._image_size = (image_size[0], image_size[1])
        self._fields: dict[str, Any] = {}
        for name, value in fields.items():
            self.set(name, value)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self._image_size

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
        else:
            self.set(name, value)

    def __getattr__(self, name: str) -> Any:
        # called only when normal lookup fails, i.e. for fields
        fields = self.__dict__.get("_fields")
        if name == "_fields" or fields is None or name not in fields:
            known = ", ".join(fields) if fields else "none"
            raise AttributeError(
                f"Cannot find field '{name}' in the given Instances (fields: {known})"
            )
        return fields[name]

    def __getstate__(self) -> dict[str, Any]:
        return {"_image_size": self._image_size, "_fields": self._fields}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def set(self, name: str, value: Any) -> None:
        """Set a field; its length must equal the other fields' length."""
        data_len = len(value)
        if self._fields and len(self) != data_len:
            raise ValueError(
                f"Adding a field '{name}' of length {data_len} to Instances of length {len(self)}"
            )
        self._fields[name] = value

    def has(self, name: str) -> bool:
        return name in self._fields

    def remove(self, name: str) -> None:
        del self._fields[name]

    def get(self, name: str) -> Any:
        return self._fields[name]

    def get_fields(self) -> dict[str, Any]:
        """The field dict itself (modifying it modifies the instances)."""
        return self._fields

    def to(self, *args: Any, **kwargs: Any) -> Instances:
        """A copy whose tensor-like fields are moved with ``.to(*args, **kwargs)``."""
        ret = Instances(self._image_size)
        for name, value in self._fields.items():
            if hasattr(value, "to"):
                value = value.to(*args, **kwargs)
            ret.set(name, value)
        return ret

    def __getitem__(self, item: int | slice | torch.Tensor | list) -> Instances:
        """Select instances by index, slice, bool mask or index tensor; an int keeps a length-1."""
        if isinstance(item, int):
            if item >= len(self) or item < -len(self):
                raise IndexError("Instances index out of range!")
            item = slice(item, None, len(self))
        ret = Instances(self._image_size)
        for name, value in self._fields.items():
            if isinstance(value, list) and not isinstance(item, slice):
                value = _index_list(value, item)
            else:
                value = value[item]
            ret.set(name, value)
        return ret

    def __len__(self) -> int:
        for value in self._fields.values():
            return value.__len__()
        raise NotImplementedError("Empty Instances does not support __len__!")

    def __iter__(self):
        raise NotImplementedError("`Instances` object is not iterable!")

    @staticmethod
    def cat(instance_lists: list[Instances]) -> Instances:
        """Concatenate instances of the same image size and fields."""
        if len(instance_lists) == 0:
            raise ValueError("Instances.cat needs at least one Instances")
        if not all(isinstance(i, Instances) for i in instance_lists):
            raise TypeError("Instances.cat expects a list of Instances")
        if len(instance_lists) == 1:
            return instance_lists[0]
        image_size = instance_lists[0].image_size
        for inst in instance_lists[1:]:
            if inst.image_size != image_size:
                raise ValueError(
                    f"cannot cat Instances of sizes {image_size} and {inst.image_size}"
                )
        ret = Instances(image_size)
        for name in instance_lists[0]._fields:
            values = [inst.get(name) for inst in instance_lists]
            first = values[0]
            if isinstance(first, torch.Tensor):
                merged = torch.cat(values, dim=0)
            elif isinstance(first, list):
                merged = list(itertools.chain(*values))
            elif hasattr(type(first), "cat"):
                merged = type(first).cat(values)
            else:
                raise ValueError(f"Unsupported type {type(first)} for concatenation")
            ret.set(name, merged)
        return ret

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}: {v}" for k, v in self._fields.items())
        return (
            f"Instances(num_instances={len(self) if self._fields else 0}, "
            f"image_height={self._image_size[0]}, image_width={self._image_size[1]}, "
            f"fields=[{fields}])"
        )

    __str__ = __repr__


def _index_list(values: list, item: torch.Tensor | list) -> list:
    index = torch.as_tensor(item)
    if index.dtype == torch.bool:
        index = index.nonzero().flatten()
    return [values[int(i)] for i in index.tolist()]
