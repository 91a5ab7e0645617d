"""Transforms and augmentations: sizes by hand, polygon clipping vs raster crops, image reading."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from detrex_ext.data import read_image
from detrex_ext.data import transforms as T
from detrex_ext.structures import polygons_to_bitmask


@pytest.mark.parametrize(
    "size, short, max_size, expected",
    [
        ((480, 640), 800, 1333, (800, 1067)),  # 640 * 800 / 480 = 1066.67
        ((640, 480), 800, 1333, (1067, 800)),
        ((200, 1000), 800, 1333, (267, 1333)),  # long side capped: 800 x 4000 -> scale 1333/4000
        ((512, 683), 512, 2048, (512, 683)),
    ],
)
def test_resize_shortest_edge_output_shape(size, short, max_size, expected):
    assert T.ResizeShortestEdge.get_output_shape(*size, short, max_size) == expected
    aug = T.ResizeShortestEdge(short, max_size)
    tfm = aug.get_transform(np.zeros((*size, 3), dtype=np.uint8))
    assert tfm.apply_image(np.zeros((*size, 3), dtype=np.uint8)).shape[:2] == expected


def test_resize_scale_and_fixed_size_crop_follow_the_lsj_rules(monkeypatch):
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    draws = iter([1.5, 0.25])  # ResizeScale's scale, then FixedSizeCrop's offset fraction
    monkeypatch.setattr(np.random, "uniform", lambda *a, **k: next(draws))
    aug_input = T.AugInput(image.copy())
    transforms = T.AugmentationList([T.ResizeScale(0.1, 2.0, 256, 256), T.FixedSizeCrop(256)])(
        aug_input
    )
    # scale = min(384 / 300, 384 / 400) = 0.96 -> 288 x 384; crop offset round(0.25 * (32, 128))
    resize, crop, pad = transforms.transforms
    assert (resize.new_h, resize.new_w) == (288, 384)
    assert (crop.y0, crop.x0, crop.h, crop.w) == (8, 32, 256, 256)
    assert pad.x1 == pad.y1 == 0
    assert aug_input.image.shape == (256, 256, 3)
    monkeypatch.undo()

    small = T.AugInput(
        np.full((100, 60, 3), 7, dtype=np.uint8), sem_seg=np.ones((100, 60), np.uint8)
    )
    T.FixedSizeCrop(128)(small)
    assert small.image.shape == (128, 128, 3)
    assert (small.image[:100, :60] == 7).all() and (small.image[100:] == 128).all()
    assert (small.sem_seg[:, 60:] == 255).all() and (small.sem_seg[:100, :60] == 1).all()


def test_crop_clips_polygons_like_cropping_the_raster():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(3, 12))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(5, 40, n)
        cx, cy = rng.uniform(10, 90, 2)
        polygon = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
        x0, y0 = (int(v) for v in rng.integers(0, 60, 2))
        w, h = (int(v) for v in rng.integers(10, 60, 2))
        expected = polygons_to_bitmask([polygon.reshape(-1)], 120, 120)[y0 : y0 + h, x0 : x0 + w]
        clipped = T.CropTransform(x0, y0, w, h).apply_polygons([polygon.copy()])
        for piece in clipped:
            assert piece[:, 0].min() >= 0 and piece[:, 0].max() <= w
            assert piece[:, 1].min() >= 0 and piece[:, 1].max() <= h
        mask = polygons_to_bitmask([p.reshape(-1) for p in clipped], h, w)
        # identical up to rasterisation of the new vertices on the crop border
        assert (mask != expected).sum() <= max(3, 0.05 * expected.sum())


def test_clip_polygon_to_box_by_hand():
    square = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
    clipped = T.clip_polygon_to_box(square, 5, -1, 20, 4)
    assert sorted(map(tuple, clipped.tolist())) == [
        (5.0, 0.0),
        (5.0, 4.0),
        (10.0, 0.0),
        (10.0, 4.0),
    ]
    assert len(T.clip_polygon_to_box(square, 20, 20, 30, 30)) == 0
    assert np.array_equal(T.clip_polygon_to_box(square, -1, -1, 11, 11), square)


def test_resize_transform_segmentation_uses_nearest_for_every_dtype():
    labels = np.random.default_rng(1).integers(0, 200, (13, 17))
    tfm = T.ResizeTransform(13, 17, 31, 9)
    out8 = tfm.apply_segmentation(labels.astype(np.uint8))
    out32 = tfm.apply_segmentation(labels.astype(np.int32))
    out64 = tfm.apply_segmentation(labels.astype(np.int64) * 100000)
    assert out8.shape == (31, 9) and set(np.unique(out8)) <= set(np.unique(labels))
    assert np.array_equal(out8, out32) and np.array_equal(out8.astype(np.int64) * 100000, out64)
    coords = tfm.apply_coords(np.array([[17.0, 13.0]]))
    assert np.allclose(coords, [[9.0, 31.0]])


def test_flip_moves_pixels_and_coordinates_together():
    image = np.zeros((4, 6), dtype=np.uint8)
    image[1, 0] = 255  # pixel [0, 1) x [1, 2)
    aug = T.RandomFlip(prob=1.0)
    aug_input = T.AugInput(image, boxes=np.array([[0.0, 1.0, 1.0, 2.0]]))
    aug(aug_input)
    assert aug_input.image[1, 5] == 255
    assert aug_input.boxes.tolist() == [[5.0, 1.0, 6.0, 2.0]]
    assert isinstance(T.RandomFlip(prob=0.0).get_transform(image), T.NoOpTransform)


def test_random_crop_with_category_area_limit():
    label = np.zeros((100, 100), dtype=np.uint8)
    label[:, 80:] = 1
    np.random.seed(3)
    aug = T.RandomCropWithCategoryAreaLimit("absolute", (50, 50), single_category_max_area=0.75)
    for _ in range(5):
        tfm = aug.get_transform(np.zeros((100, 100, 3), np.uint8), label)
        window = tfm.apply_segmentation(label)
        counts = np.bincount(window.ravel(), minlength=2)
        assert window.shape == (50, 50) and counts.max() < 0.75 * counts.sum()
    plain = T.RandomCrop("absolute", (512, 512)).get_transform(np.zeros((300, 700, 3), np.uint8))
    assert (plain.h, plain.w) == (300, 512)  # a side smaller than the crop is not cropped


def test_color_aug_ssd_steps():
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    unchanged = T.ColorAugSSDTransform("RGB").apply_image(image)
    assert np.array_equal(unchanged, image)
    brighter = T.ColorAugSSDTransform("RGB", brightness_delta=20).apply_image(image)
    assert np.array_equal(brighter, np.clip(image.astype(int) + 20, 0, 255))
    grey = np.full((4, 4, 3), 100, np.uint8)
    assert np.array_equal(T.ColorAugSSDTransform("RGB", hue_delta=18).apply_image(grey), grey)
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 200
    shifted = T.ColorAugSSDTransform("RGB", hue_delta=30).apply_image(red)  # +60 degrees: yellow
    assert shifted[0, 0, 0] > 150 and shifted[0, 0, 1] > 150 and shifted[0, 0, 2] < 30
    np.random.seed(0)
    out = T.ColorAugSSD()(T.AugInput(image.copy()))
    assert isinstance(out, T.ColorAugSSDTransform)


def test_read_image_applies_exif_and_converts_modes(tmp_path):
    pixels = np.zeros((20, 30, 3), dtype=np.uint8)
    pixels[:4, :4] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    rotated = read_image(str(tmp_path / "rotated.jpg"), "RGB")
    assert rotated.shape == (30, 20, 3)
    assert rotated[0, -1, 0] > 200  # the red corner moved to the top right

    Image.fromarray(np.full((5, 7), 9, np.uint8)).save(tmp_path / "grey.png")
    grey = read_image(str(tmp_path / "grey.png"), "RGB")
    assert grey.shape == (5, 7, 3) and (grey == 9).all()
    assert read_image(str(tmp_path / "grey.png")).shape == (5, 7)  # labels keep one channel

    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 2] = 50
    rgba[..., 3] = 10
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert read_image(str(tmp_path / "rgba.png"), "RGB")[0, 0].tolist() == [0, 0, 50]
    assert read_image(str(tmp_path / "rgba.png"), "BGR")[0, 0].tolist() == [50, 0, 0]
    with pytest.raises(ValueError, match="not supported"):
        read_image(str(tmp_path / "rgba.png"), "YUV")
