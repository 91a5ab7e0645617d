"""The augmentations used by Mask DINO's recipes (detectron2 names and sampling rules)."""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np
from fvcore.transforms.transform import (
    HFlipTransform,
    NoOpTransform,
    PadTransform,
    Transform,
    TransformList,
    VFlipTransform,
)

from .augmentation import Augmentation, _as_augmentation
from .transform import BILINEAR, ColorAugSSDTransform, CropTransform, ResizeTransform

__all__ = [
    "ColorAugSSD",
    "FixedSizeCrop",
    "RandomApply",
    "RandomCrop",
    "RandomCropWithCategoryAreaLimit",
    "RandomCrop_CategoryAreaConstraint",
    "RandomFlip",
    "Resize",
    "ResizeScale",
    "ResizeShortestEdge",
]


class RandomApply(Augmentation):
    """Apply ``tfm_or_aug`` (an ``Augmentation`` or a fixed ``Transform``) with probability
    ``prob``; otherwise a ``NoOpTransform``."""

    def __init__(self, tfm_or_aug: Augmentation | Transform, prob: float = 0.5):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandomApply prob must be in [0, 1], got {prob}")
        self.aug = _as_augmentation(tfm_or_aug)
        self.prob = prob

    def get_transform(self, *args) -> Transform:
        if self._rand_range() < self.prob:
            return self.aug.get_transform(*args)
        return NoOpTransform()

    def __call__(self, aug_input) -> Transform:
        if self._rand_range() < self.prob:
            return self.aug(aug_input)
        return NoOpTransform()


class RandomFlip(Augmentation):
    """Flip horizontally (default) or vertically with probability ``prob``."""

    def __init__(self, prob: float = 0.5, *, horizontal: bool = True, vertical: bool = False):
        if horizontal == vertical:
            raise ValueError("RandomFlip needs exactly one of horizontal=True or vertical=True")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandomFlip prob must be in [0, 1], got {prob}")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        if self._rand_range() < self.prob:
            return HFlipTransform(w) if self.horizontal else VFlipTransform(h)
        return NoOpTransform()


class Resize(Augmentation):
    """Resize to a fixed ``shape = (h, w)`` (or a square side)."""

    def __init__(self, shape: int | Sequence[int], interp: int = BILINEAR):
        if isinstance(shape, int):
            shape = (shape, shape)
        self.shape = tuple(shape)
        self.interp = interp

    def get_transform(self, image: np.ndarray) -> Transform:
        return ResizeTransform(
            image.shape[0], image.shape[1], self.shape[0], self.shape[1], self.interp
        )


class ResizeShortestEdge(Augmentation):
    """Scale the short side to a sampled length, capping the long side at ``max_size``.

    ``sample_style="range"`` draws an integer in ``[min, max]`` of ``short_edge_length``;
    ``"choice"`` picks one of its values. The size is rounded as ``int(x + 0.5)``.
    """

    def __init__(
        self,
        short_edge_length: int | Sequence[int],
        max_size: int = sys.maxsize,
        sample_style: str = "range",
        interp: int = BILINEAR,
    ):
        if sample_style not in ("range", "choice"):
            raise ValueError(f"sample_style must be 'range' or 'choice', got {sample_style!r}")
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length, short_edge_length)
        short_edge_length = tuple(short_edge_length)
        if sample_style == "range" and len(short_edge_length) != 2:
            raise ValueError(f"sample_style='range' needs [min, max], got {short_edge_length}")
        self.is_range = sample_style == "range"
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        if self.is_range:
            size = int(np.random.randint(self.short_edge_length[0], self.short_edge_length[1] + 1))
        else:
            size = int(np.random.choice(self.short_edge_length))
        if size == 0:
            return NoOpTransform()
        new_h, new_w = self.get_output_shape(h, w, size, self.max_size)
        return ResizeTransform(h, w, new_h, new_w, self.interp)

    @staticmethod
    def get_output_shape(
        old_h: int, old_w: int, short_edge_length: int, max_size: int
    ) -> tuple[int, int]:
        """Output ``(h, w)`` for a short side of ``short_edge_length`` and a long-side cap."""
        scale = short_edge_length / min(old_h, old_w)
        if old_h < old_w:
            new_h, new_w = float(short_edge_length), scale * old_w
        else:
            new_h, new_w = scale * old_h, float(short_edge_length)
        if max(new_h, new_w) > max_size:
            cap = max_size / max(new_h, new_w)
            new_h, new_w = new_h * cap, new_w * cap
        return int(new_h + 0.5), int(new_w + 0.5)


class ResizeScale(Augmentation):
    """Large-scale jitter resize: scale the image to fit ``s * (target_height, target_width)``
    with ``s ~ U(min_scale, max_scale)``, keeping the aspect ratio (output rounded).
    """

    def __init__(
        self,
        min_scale: float,
        max_scale: float,
        target_height: int,
        target_width: int,
        interp: int = BILINEAR,
    ):
        if not 0 < min_scale <= max_scale:
            raise ValueError(
                f"ResizeScale needs 0 < min_scale <= max_scale, got {min_scale}, {max_scale}"
            )
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        random_scale = np.random.uniform(self.min_scale, self.max_scale)
        scale = min(self.target_height * random_scale / h, self.target_width * random_scale / w)
        new_h, new_w = np.round(np.multiply((h, w), scale)).astype(int)
        return ResizeTransform(h, w, int(new_h), int(new_w), self.interp)


class FixedSizeCrop(Augmentation):
    """Crop to at most ``crop_size = (h, w)`` at a random offset, then pad the bottom/right to
    exactly ``crop_size`` (image with ``pad_value``, segmentation with ``seg_pad_value``).

    One uniform draw ``u`` sets the offset on both axes: ``round(u * max(size - crop, 0))``.
    """

    def __init__(
        self,
        crop_size: int | Sequence[int],
        pad: bool = True,
        pad_value: float = 128.0,
        seg_pad_value: int = 255,
    ):
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        self.crop_size = tuple(crop_size)
        self.pad = pad
        self.pad_value = pad_value
        self.seg_pad_value = seg_pad_value

    def get_transform(self, image: np.ndarray) -> TransformList:
        h, w = image.shape[:2]
        crop_h, crop_w = self.crop_size
        max_offset = np.maximum(np.subtract((h, w), (crop_h, crop_w)), 0)
        offset = np.round(max_offset * np.random.uniform(0.0, 1.0)).astype(int)
        kept_h, kept_w = min(h, crop_h), min(w, crop_w)
        transforms: list[Transform] = [
            CropTransform(int(offset[1]), int(offset[0]), kept_w, kept_h, w, h)
        ]
        if self.pad:
            transforms.append(
                PadTransform(
                    0,
                    0,
                    crop_w - kept_w,
                    crop_h - kept_h,
                    kept_w,
                    kept_h,
                    self.pad_value,
                    self.seg_pad_value,
                )
            )
        return TransformList(transforms)


class RandomCrop(Augmentation):
    """Random crop of a size set by ``crop_type``.

    * ``"absolute"``: ``crop_size = (h, w)`` pixels (clamped to the image);
    * ``"relative"``: fractions ``(h, w)`` of the image;
    * ``"relative_range"``: fractions drawn in ``[crop_size, 1]``;
    * ``"absolute_range"``: pixels drawn in ``[crop_size[0], crop_size[1]]`` per side.
    """

    def __init__(self, crop_type: str, crop_size: Sequence[float]):
        if crop_type not in ("relative_range", "relative", "absolute", "absolute_range"):
            raise ValueError(f"unknown crop_type {crop_type!r}")
        self.crop_type = crop_type
        self.crop_size = tuple(crop_size)

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        crop_h, crop_w = self.get_crop_size((h, w))
        y0 = int(np.random.randint(h - crop_h + 1))
        x0 = int(np.random.randint(w - crop_w + 1))
        return CropTransform(x0, y0, crop_w, crop_h, w, h)

    def get_crop_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        h, w = image_size
        if self.crop_type == "relative":
            ch, cw = self.crop_size
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "relative_range":
            base = np.asarray(self.crop_size, dtype=np.float32)
            ch, cw = base + np.random.rand(2) * (1 - base)
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "absolute":
            return min(int(self.crop_size[0]), h), min(int(self.crop_size[1]), w)
        low, high = int(self.crop_size[0]), int(self.crop_size[1])
        if low > high:
            raise ValueError(
                f"absolute_range needs crop_size[0] <= crop_size[1], got {self.crop_size}"
            )
        ch = int(np.random.randint(min(h, low), min(h, high) + 1))
        cw = int(np.random.randint(min(w, low), min(w, high) + 1))
        return ch, cw


class RandomCropWithCategoryAreaLimit(Augmentation):
    """Random crop that tries (10 times) to keep any single category below
    ``single_category_max_area`` of the crop's labelled pixels (``ignored_category`` excluded).
    With ``single_category_max_area >= 1`` it is a plain ``RandomCrop``.
    """

    input_args = ("image", "sem_seg")

    def __init__(
        self,
        crop_type: str,
        crop_size: Sequence[float],
        single_category_max_area: float = 1.0,
        ignored_category: int | None = None,
    ):
        self.crop_aug = RandomCrop(crop_type, crop_size)
        self.single_category_max_area = single_category_max_area
        self.ignored_category = ignored_category

    def get_transform(self, image: np.ndarray, sem_seg: np.ndarray) -> Transform:
        if self.single_category_max_area >= 1.0:
            return self.crop_aug.get_transform(image)
        if sem_seg is None:
            raise ValueError(
                "RandomCrop_CategoryAreaConstraint with single_category_max_area < 1 needs the "
                "semantic labels: build the AugInput with sem_seg=..."
            )
        h, w = sem_seg.shape
        for _ in range(10):
            crop_h, crop_w = self.crop_aug.get_crop_size((h, w))
            y0 = int(np.random.randint(h - crop_h + 1))
            x0 = int(np.random.randint(w - crop_w + 1))
            window = sem_seg[y0 : y0 + crop_h, x0 : x0 + crop_w]
            labels, counts = np.unique(window, return_counts=True)
            if self.ignored_category is not None:
                counts = counts[labels != self.ignored_category]
            if len(counts) > 1 and counts.max() < counts.sum() * self.single_category_max_area:
                break
        return CropTransform(x0, y0, crop_w, crop_h, w, h)


RandomCrop_CategoryAreaConstraint = RandomCropWithCategoryAreaLimit  # detectron2's name


class ColorAugSSD(Augmentation):
    """SSD photometric distortion (MaskFormer's ``ColorAugSSDTransform`` recipe).

    Brightness +-``brightness_delta`` (p 0.5), then in one of two orders contrast
    [``contrast_low``, ``contrast_high``], saturation [``saturation_low``, ``saturation_high``]
    and hue +-``hue_delta`` (OpenCV units), each with p 0.5.
    """

    def __init__(
        self,
        img_format: str = "RGB",
        brightness_delta: float = 32,
        contrast_low: float = 0.5,
        contrast_high: float = 1.5,
        saturation_low: float = 0.5,
        saturation_high: float = 1.5,
        hue_delta: int = 18,
    ):
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        def maybe(value_fn):
            return value_fn() if np.random.randint(2) else None

        brightness = maybe(
            lambda: float(np.random.uniform(-self.brightness_delta, self.brightness_delta))
        )
        contrast_first = bool(np.random.randint(2))
        contrast = maybe(lambda: float(np.random.uniform(self.contrast_low, self.contrast_high)))
        saturation = maybe(
            lambda: float(np.random.uniform(self.saturation_low, self.saturation_high))
        )
        hue = maybe(lambda: int(np.random.randint(-self.hue_delta, self.hue_delta + 1)))
        return ColorAugSSDTransform(
            self.img_format, brightness, contrast, saturation, hue, contrast_first
        )
