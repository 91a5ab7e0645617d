"""detrex_ext.utils.image_io reads images with PIL and numpy only: importing and using it never
imports torch (the ONNX runtime path relies on that)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from detrex_ext.utils.image_io import UnreadableImageError, load_image_rgb, read_image


def test_reading_an_image_never_imports_torch(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.full((4, 5, 3), 7, np.uint8)).save(path)
    code = (
        "import json, sys\n"
        "from detrex_ext.utils.image_io import load_image_rgb\n"
        f"a = load_image_rgb({str(path)!r})\n"
        "print(json.dumps({'shape': list(a.shape), 'torch': 'torch' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"shape": [4, 5, 3], "torch": False}


def test_gray_and_bgr_conversions(tmp_path):
    path = tmp_path / "g.png"
    Image.fromarray(np.array([[10, 200]], np.uint8), mode="L").save(path)
    assert load_image_rgb(path).tolist() == [[[10, 10, 10], [200, 200, 200]]]
    rgb = tmp_path / "c.png"
    Image.fromarray(np.array([[[1, 2, 3]]], np.uint8)).save(rgb)
    assert read_image(str(rgb), "BGR").tolist() == [[[3, 2, 1]]]


def _png16(path, values: np.ndarray) -> None:
    """A 16-bit PNG written byte by byte (gray HxW or RGB HxWx3), independently of PIL."""
    import struct
    import zlib

    height, width = values.shape[:2]
    color_type = 0 if values.ndim == 2 else 2
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


GRAY16 = np.array([[0, 255, 256, 5000], [32768, 40000, 65280, 65535]], np.uint16)
GRAY16_AS_8 = np.array([[0, 0, 1, 19], [128, 156, 255, 255]], np.uint8)  # the high byte


def test_16_bit_png_is_scaled_to_8_bit_everywhere_it_is_read(tmp_path):
    """Training/evaluation (load_image through the DatasetMapper), the Predictor and the
    torch-free reader all see the high byte, not a white image."""
    from detrex_ext.data import DatasetMapper
    from detrex_ext.data.detection_utils import load_image
    from detrex_ext.engine.predictor import model_input

    path = tmp_path / "depth16.png"
    _png16(path, GRAY16)
    expected = np.repeat(GRAY16_AS_8[:, :, None], 3, axis=2)
    assert np.array_equal(read_image(str(path), "RGB"), expected)
    assert np.array_equal(load_image_rgb(path), expected)
    assert np.array_equal(load_image({"file_name": str(path)}, "RGB"), expected)
    mapped = DatasetMapper(is_train=False, augmentations=[])(
        {"file_name": str(path), "height": 2, "width": 4, "image_id": 1}
    )
    assert np.array_equal(mapped["image"].numpy().transpose(1, 2, 0), expected)
    assert np.array_equal(model_input(path)["image"].numpy().transpose(1, 2, 0), expected)
    assert np.array_equal(load_image_rgb(Image.open(path)), expected)  # a PIL image given
    assert np.array_equal(read_image(str(path), "L")[:, :, 0], GRAY16_AS_8)
    assert read_image(str(path)).dtype == np.uint16  # labels (format None) keep their values

    rgb = np.stack([GRAY16, GRAY16[::-1], 65535 - GRAY16], axis=2)
    _png16(tmp_path / "rgb16.png", rgb)
    assert np.array_equal(load_image_rgb(tmp_path / "rgb16.png"), (rgb >> 8).astype(np.uint8))


def test_float_images_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.ones((2, 2), np.float32), mode="F").save(path)
    with pytest.raises(UnreadableImageError, match=f"{path} has 32-bit floating-point pixels"):
        load_image_rgb(path)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jpg", b"", "is empty (0 bytes), not an image"),
        (
            "notes.png",
            b"not an image at all\n",
            "is not an image that can be read (unknown format;",
        ),
        ("cut.png", None, "is a truncated or damaged image ("),
    ],
)
def test_unreadable_files_name_the_file_and_the_problem(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        noise = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(noise).save(path)
        content = path.read_bytes()[:2000]
    path.write_bytes(content)
    with pytest.raises(UnreadableImageError) as error:
        read_image(str(path), "RGB")
    assert str(error.value).startswith(f"{path} {message}")
    with pytest.raises(FileNotFoundError, match=f"image {tmp_path / 'gone.png'} does not exist"):
        read_image(str(tmp_path / "gone.png"))


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 5, 3), (4, 0)])
def test_arrays_without_pixels_are_refused_with_their_size(shape):
    with pytest.raises(ValueError, match=f"the image has size {shape[0]}x{shape[1]}"):
        load_image_rgb(np.zeros(shape, np.uint8))
