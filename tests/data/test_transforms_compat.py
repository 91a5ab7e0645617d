"""detectron2's augmentation contract and transform names: inputs read from the signature of
``get_transform``, ``RandomApply``, ``ColorTransform`` / ``PILColorTransform``,
``ExtentTransform``, fvcore's ``ScaleTransform``, ``gen_crop_transform_with_instance``."""

from __future__ import annotations

import fvcore.transforms.transform as fvcore_transforms
import numpy as np
import pytest
from PIL import ImageOps

import detrex_ext.data.transforms as T
from detrex_ext.data.detection_utils import gen_crop_transform_with_instance
from detrex_ext.structures import BoxMode


class _SeesImageAndLabels(T.Augmentation):
    """Flips when the labels' top-left pixel is 1 (so the test knows what it got)."""

    def __init__(self):
        self.seen = None

    def get_transform(self, image, sem_seg):
        self.seen = (image.shape, None if sem_seg is None else int(sem_seg[0, 0]))
        return T.HFlipTransform(image.shape[1]) if self.seen[1] == 1 else T.NoOpTransform()


class _OneInput(T.Augmentation):
    def get_transform(self, img):
        return T.VFlipTransform(img.shape[0])


class _Variadic(T.Augmentation):
    def get_transform(self, *args, **kwargs):
        return T.NoOpTransform()


def test_get_transform_inputs_come_from_its_signature():
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    labels = np.ones((3, 4), dtype=np.uint8)
    labels[:, 2:] = 5
    aug_input = T.AugInput(image, sem_seg=labels)
    aug = _SeesImageAndLabels()
    transforms = T.AugmentationList([aug, _OneInput()])(aug_input)
    assert aug.seen == ((3, 4), 1)
    expected = image[::-1, ::-1]  # the horizontal flip, then the one-input vertical flip
    assert (aug_input.image == expected).all()
    assert (aug_input.sem_seg == labels[::-1, ::-1]).all()
    assert len(transforms.transforms) == 2
    # an AugInput without labels passes None, as detectron2 does
    aug(T.AugInput(image))
    assert aug.seen == ((3, 4), None)
    with pytest.raises(TypeError, match="input_args"):
        _Variadic()(T.AugInput(image))

    class _NeedsDepth(T.Augmentation):
        def get_transform(self, image, depth):
            return T.NoOpTransform()

    with pytest.raises(AttributeError, match="'depth'"):
        _NeedsDepth()(T.AugInput(image))


def test_random_apply_applies_with_its_probability():
    image = np.arange(6, dtype=np.uint8).reshape(2, 3)
    always = T.RandomApply(T.HFlipTransform(3), prob=1.0)
    never = T.RandomApply(_OneInput(), prob=0.0)
    aug_input = T.AugInput(image.copy())
    assert isinstance(never(aug_input), T.NoOpTransform)
    assert isinstance(always(aug_input), T.HFlipTransform)
    assert (aug_input.image == image[:, ::-1]).all()
    # a wrapped augmentation still gets the inputs its signature names
    labels = np.ones((2, 3), dtype=np.uint8)
    wrapped = _SeesImageAndLabels()
    T.RandomApply(wrapped, prob=1.0)(T.AugInput(image, sem_seg=labels))
    assert wrapped.seen == ((2, 3), 1)
    np.random.seed(0)
    half = T.RandomApply(T.HFlipTransform(3), prob=0.3)
    applied = [not isinstance(half.get_transform(image), T.NoOpTransform) for _ in range(4000)]
    assert np.mean(applied) == pytest.approx(0.3, abs=0.03)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        T.RandomApply(T.NoOpTransform(), prob=1.5)


def test_color_transforms_change_pixels_only():
    image = np.array([[[0, 10, 20], [250, 255, 128]]], dtype=np.uint8)  # 1 x 2 RGB
    coords = np.array([[1.5, 0.5]])
    labels = np.array([[3, 4]], dtype=np.uint8)
    for tfm in (T.ColorTransform(lambda x: 255 - x), T.PILColorTransform(ImageOps.invert)):
        assert (tfm.apply_image(image) == 255 - image).all()
        assert (tfm.apply_coords(coords) == coords).all()
        assert (tfm.apply_segmentation(labels) == labels).all()
        assert isinstance(tfm.inverse(), T.NoOpTransform)
    with pytest.raises(ValueError, match="callable"):
        T.ColorTransform("invert")


def test_extent_transform_crops_and_scales():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4)
    zoom = T.ExtentTransform((0, 0, 2, 2), (4, 4), interp=T.NEAREST)
    # the top-left 2x2 region, scaled 2x: output[y, x] = image[y // 2, x // 2]
    assert (zoom.apply_image(image) == image[np.arange(4)[:, None] // 2, np.arange(4) // 2]).all()
    assert zoom.apply_coords(np.array([[1.0, 0.5], [2.0, 2.0]])).tolist() == [[2, 1], [4, 4]]
    # a region reaching outside the image is filled; a 1-channel HxWx1 image keeps its shape
    outside = T.ExtentTransform((2, 2, 6, 6), (4, 4), interp=T.NEAREST, fill=7)
    out = outside.apply_image(image[:, :, None])
    assert out.shape == (4, 4, 1)
    assert (out[:2, :2, 0] == image[2:, 2:]).all() and (out[2:, :, 0] == 7).all()
    assert (outside.apply_segmentation(image)[:2, :2] == image[2:, 2:]).all()


def test_fvcore_transforms_are_re_exported():
    assert T.ScaleTransform is fvcore_transforms.ScaleTransform
    scaled = T.ScaleTransform(2, 4, 4, 8).apply_coords(np.array([[1.0, 1.0]]))
    assert scaled.tolist() == [[2.0, 2.0]]


def test_gen_crop_transform_with_instance_keeps_the_box_centre():
    # image H=10, W=20; box x 10..14, y 2..6 (centre y=4, x=12); crop 4 x 6:
    # y0 in [max(4 - 4, 0), min(10 - 4, 4)] = [0, 4], x0 in [max(12 - 6, 0), min(14, 12)] = [6, 12]
    instance = {"bbox": [10, 2, 4, 4], "bbox_mode": BoxMode.XYWH_ABS}
    np.random.seed(0)
    crops = [gen_crop_transform_with_instance((4, 6), (10, 20), instance) for _ in range(300)]
    assert {c.y0 for c in crops} == set(range(0, 5))
    assert {c.x0 for c in crops} == set(range(6, 13))
    assert {(c.h, c.w) for c in crops} == {(4, 6)}
    with pytest.raises(ValueError, match="larger than the image"):
        gen_crop_transform_with_instance((11, 6), (10, 20), instance)
    with pytest.raises(ValueError, match="outside the image"):
        far = {"bbox": [30, 2, 4, 4], "bbox_mode": BoxMode.XYWH_ABS}
        gen_crop_transform_with_instance((4, 6), (10, 20), far)
