"""Augmentations: random policies that produce deterministic ``Transform``s (detectron2's API).

An ``Augmentation`` looks at its inputs (the parameters of its ``get_transform``, e.g.
``(image)`` or ``(image, sem_seg)``), draws its random parameters from ``np.random`` and returns a
``Transform``. ``AugInput`` holds the image, boxes and semantic map and applies a transform to
all of them; ``apply_augmentations`` runs a list of augmentations and returns the combined
``TransformList`` so that annotations (polygons, keypoints, panoptic maps) can be transformed
the same way afterwards.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import numpy as np
from fvcore.transforms.transform import Transform, TransformList

__all__ = [
    "AugInput",
    "Augmentation",
    "AugmentationList",
    "apply_augmentations",
    "apply_transform_gens",
]


class Augmentation:
    """Base class: subclasses implement ``get_transform(...) -> Transform``.

    ``__call__(aug_input)`` passes the ``AugInput`` attributes named by ``input_args`` to
    ``get_transform``. When a subclass leaves ``input_args`` as None they are read from the
    signature of ``get_transform`` (detectron2's rule): one parameter means ``("image",)``,
    otherwise the parameter names, e.g. ``get_transform(self, image, sem_seg)``.
    """

    input_args: tuple[str, ...] | None = None

    def _init(self, params: dict[str, Any] | None = None) -> None:
        """Store constructor arguments as attributes (call with ``locals()``)."""
        if params:
            for key, value in params.items():
                if key != "self" and not key.startswith("_"):
                    setattr(self, key, value)

    def get_transform(self, *args: Any) -> Transform:
        raise NotImplementedError

    def _input_names(self) -> tuple[str, ...]:
        if self.input_args is not None:
            return tuple(self.input_args)
        params = list(inspect.signature(self.get_transform).parameters.values())
        if len(params) == 1:
            return ("image",)
        variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        if any(p.kind in variadic for p in params):
            raise TypeError(
                f"{type(self).__name__}.get_transform takes *args/**kwargs, so its inputs "
                "cannot be read from its signature: set the class attribute input_args (e.g. "
                "input_args = ('image', 'sem_seg')) or override __call__"
            )
        return tuple(p.name for p in params)

    def __call__(self, aug_input: AugInput) -> Transform:
        """Draw a transform from ``aug_input``'s fields, apply it in place and return it."""
        args = []
        for name in self._input_names():
            if not hasattr(aug_input, name):
                raise AttributeError(
                    f"{type(self).__name__}.get_transform needs the input {name!r}, which "
                    f"{type(aug_input).__name__} lacks; pass it when building the AugInput "
                    f"(e.g. AugInput(image, {name}=...))"
                )
            args.append(getattr(aug_input, name))
        tfm = self.get_transform(*args)
        if not isinstance(tfm, (Transform, TransformList)):
            raise TypeError(
                f"{type(self).__name__}.get_transform must return a Transform, got {type(tfm)}"
            )
        aug_input.transform(tfm)
        return tfm

    def _rand_range(self, low: float = 1.0, high: float | None = None, size: Any = None) -> Any:
        """Uniform sample in [low, high) (or [0, low) when ``high`` is None)."""
        if high is None:
            low, high = 0.0, low
        return np.random.uniform(low, high, size)

    def __repr__(self) -> str:
        names = [k for k in vars(self) if not k.startswith("_")]
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in names)
        return f"{type(self).__name__}({args})"


class _TransformToAug(Augmentation):
    """Wrap a fixed ``Transform`` so it can sit in a list of augmentations."""

    def __init__(self, tfm: Transform):
        self.tfm = tfm

    def get_transform(self, *args: Any) -> Transform:
        return self.tfm


def _as_augmentation(item: Augmentation | Transform) -> Augmentation:
    if isinstance(item, Augmentation):
        return item
    if isinstance(item, (Transform, TransformList)):
        return _TransformToAug(item)
    raise TypeError(f"expected an Augmentation or a Transform, got {type(item)}")


class AugmentationList(Augmentation):
    """Apply augmentations in order; returns the ``TransformList`` of everything applied."""

    def __init__(self, augs: Sequence[Augmentation | Transform]):
        self.augs = [_as_augmentation(a) for a in augs]

    def __call__(self, aug_input: AugInput) -> TransformList:
        return TransformList([aug(aug_input) for aug in self.augs])

    def __repr__(self) -> str:
        return f"AugmentationList[{', '.join(map(repr, self.augs))}]"


class AugInput:
    """The inputs of an augmentation: ``image`` (HxW or HxWxC, uint8 or float), optional
    ``boxes`` (Nx4 XYXY_ABS float) and ``sem_seg`` (HxW integer). ``transform(tfm)`` updates all
    of them in place.
    """

    def __init__(
        self,
        image: np.ndarray,
        *,
        boxes: np.ndarray | None = None,
        sem_seg: np.ndarray | None = None,
    ):
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
            raise ValueError("AugInput needs an HxW or HxWxC numpy image")
        self.image = image
        self.boxes = boxes
        self.sem_seg = sem_seg

    def transform(self, tfm: Transform) -> None:
        self.image = tfm.apply_image(self.image)
        if self.boxes is not None:
            self.boxes = tfm.apply_box(self.boxes)
        if self.sem_seg is not None:
            self.sem_seg = tfm.apply_segmentation(self.sem_seg)

    def apply_augmentations(
        self, augmentations: Sequence[Augmentation | Transform]
    ) -> TransformList:
        return AugmentationList(augmentations)(self)


def apply_augmentations(
    augmentations: Sequence[Augmentation | Transform], inputs: AugInput | np.ndarray
) -> tuple[AugInput | np.ndarray, TransformList]:
    """Apply ``augmentations`` to ``inputs`` (an AugInput, or just an image array).

    Returns:
        ``(inputs, transforms)``: the augmented inputs (same kind as given) and the
        ``TransformList`` to apply to the annotations.
    """
    image_only = isinstance(inputs, np.ndarray)
    aug_input = AugInput(inputs) if image_only else inputs
    transforms = AugmentationList(augmentations)(aug_input)
    return (aug_input.image if image_only else aug_input), transforms


apply_transform_gens = apply_augmentations  # detectron2's older name
