"""Reading images into uint8 RGB arrays with PIL and numpy only (no torch import), so that
runtimes without PyTorch (the ONNX predictor) read images exactly as training and the Predictor do.

16-bit images become 8-bit by their high byte (as Pillow itself reads 16-bit colour PNGs); a file
that cannot be decoded (empty, not an image, truncated) raises ``UnreadableImageError`` naming it.

Dataset dicts point at files (``file_name``, ``sem_seg_file_name``, ``pan_seg_file_name``) or, for
generated data, carry a ``scene``; ``load_image`` / ``load_sem_seg`` / ``load_pan_seg`` read either
(``detrex_ext.data.detection_utils`` re-exports them).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "SUPPORTED_IMAGE_FORMATS",
    "ImageInput",
    "UnreadableImageError",
    "check_image_file",
    "convert_image_format",
    "id2rgb",
    "load_image",
    "load_image_rgb",
    "load_pan_seg",
    "load_sem_seg",
    "read_image",
    "rgb2id",
]

SUPPORTED_IMAGE_FORMATS = ("RGB", "BGR", "L")

ImageInput = Union[str, os.PathLike, np.ndarray, Image.Image]

_16_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_READABLE = "JPEG, PNG, BMP, WebP, TIFF, GIF"


class UnreadableImageError(OSError):
    """An image file that cannot be decoded; the message names the file and the reason."""


def _to_8_bit(image: Image.Image, source: str = "the image") -> Image.Image:
    """16-bit (and 32-bit integer) single-channel images scaled to 8 bits by their high byte;
    other modes are returned as they are. Float images are refused: their range is unknown."""
    if image.mode in _16_BIT_MODES:
        return Image.fromarray((np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8), "L")
    if image.mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise UnreadableImageError(
                f"{source} has 32-bit integer pixels in [{values.min()}, {values.max()}]; "
                "convert it to an 8-bit image (or 16-bit PNG) first"
            )
        return Image.fromarray((values.astype(np.uint32) >> 8).astype(np.uint8), "L")
    if image.mode == "F":
        raise UnreadableImageError(
            f"{source} has 32-bit floating-point pixels; convert it to an 8-bit image first"
        )
    return image


def convert_image_format(
    image: Image.Image | np.ndarray, format: str | None, source: str = "the image"
) -> np.ndarray:
    """Convert a PIL image or an RGB array to ``format``.

    Args:
        image: PIL image (any mode; 16-bit ones are scaled to 8 bits), or HxWx3 uint8 RGB array.
        format: "RGB", "BGR", "L" (returns HxWx1), or None to keep the PIL mode as it is (label
            PNGs: palette indices stay indices, 16-bit labels stay 16-bit).
        source: how errors name the image (its file).

    Returns:
        uint8 ndarray HxWxC (HxW for single-channel images read with ``format=None``).
    """
    if format is not None and format not in SUPPORTED_IMAGE_FORMATS:
        raise ValueError(
            f"image format {format!r} is not supported; use one of {SUPPORTED_IMAGE_FORMATS}"
        )
    if isinstance(image, np.ndarray):
        if format is None or format == "RGB":
            return image
        image = Image.fromarray(image)
    if format is not None:
        # grayscale, palette, RGBA, CMYK... all become RGB (alpha is dropped); PIL's convert
        # would clip 16-bit values to 255 (a white image)
        image = _to_8_bit(image, source).convert("L" if format == "L" else "RGB")
    array = np.asarray(image)
    if format == "BGR":
        array = array[:, :, ::-1]
    elif format == "L":
        array = array[:, :, None]
    return np.ascontiguousarray(array)


def _refuse_url(name: str) -> None:
    if name.lower().startswith(("http://", "https://", "ftp://", "s3://", "gs://")):
        raise ValueError(
            f"{name} is a URL; images are read from local files only: download it first "
            "(e.g. curl -O <url>) and pass the file"
        )


def _existing_file(file_name: str | os.PathLike) -> str:
    """``file_name`` as a string, after refusing URLs, missing files, folders and empty files."""
    file_name = os.fspath(file_name)
    _refuse_url(file_name)
    if not os.path.exists(file_name):
        raise FileNotFoundError(f"image {file_name} does not exist")
    if os.path.isdir(file_name):
        raise UnreadableImageError(f"{file_name} is a folder, not an image")
    if os.path.getsize(file_name) == 0:
        raise UnreadableImageError(f"{file_name} is empty (0 bytes), not an image")
    return file_name


@contextlib.contextmanager
def _decoding(file_name: str) -> Iterator[None]:
    """Turn PIL's errors while opening or decoding ``file_name`` into ``UnreadableImageError``."""
    try:
        yield
    except UnidentifiedImageError:
        raise UnreadableImageError(
            f"{file_name} is not an image that can be read (unknown format; {_READABLE} are)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UnreadableImageError(f"{file_name} is a truncated or damaged image ({e})") from None


def check_image_file(file_name: str | os.PathLike) -> None:
    """Cheap checks (existence, size, the format in the file's header; the pixels are not
    decoded) that a file is an image: raises as ``read_image`` would for a missing, empty or
    non-image file, so that tools can refuse bad inputs before loading a model."""
    file_name = _existing_file(file_name)
    with _decoding(file_name), Image.open(file_name):
        pass


def read_image(file_name: str, format: str | None = None) -> np.ndarray:
    """Read an image file, applying its EXIF orientation, in ``format`` (see
    ``convert_image_format``).

    Raises:
        FileNotFoundError: no such file.
        UnreadableImageError: the file is empty, not an image, or truncated or damaged.
        ValueError: a URL was given (only local files are read).
    """
    file_name = _existing_file(file_name)
    with open(file_name, "rb") as f, _decoding(file_name):
        image = Image.open(f)
        image = ImageOps.exif_transpose(image) or image
        image.load()
    return convert_image_format(image, format, source=file_name)


def load_image_rgb(image: ImageInput) -> np.ndarray:
    """HWC uint8 RGB array from a path, a PIL image or an HWC/HW uint8 array."""
    if isinstance(image, (str, os.PathLike)):
        return np.ascontiguousarray(read_image(str(image), format="RGB"))
    if isinstance(image, Image.Image):
        _check_size(image.height, image.width)
        return np.asarray(_to_8_bit(image).convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3:
            hint = " (CHW? transpose to HWC)" if image.ndim == 3 and image.shape[0] == 3 else ""
            raise ValueError(f"expected an HWC RGB image array, got shape {image.shape}{hint}")
        _check_size(image.shape[0], image.shape[1])
        if image.dtype != np.uint8:
            raise ValueError(
                f"expected a uint8 image array (0-255), got {image.dtype}; convert it first, "
                "e.g. (x * 255).round().astype(np.uint8) for 0-1 floats"
            )
        return image
    raise TypeError(
        f"unsupported image input {type(image).__name__}: pass a file path, an HWC uint8 RGB numpy "
        "array or a PIL image"
    )


def _check_size(height: int, width: int) -> None:
    if height == 0 or width == 0:
        raise ValueError(f"the image has size {height}x{width} (height x width): it has no pixels")


# dataset dicts: images and label maps, from files or generated scenes


def load_image(dataset_dict: dict, format: str = "RGB") -> np.ndarray:
    """The image of a dataset dict: rendered from its ``scene`` or read from ``file_name``."""
    scene = dataset_dict.get("scene")
    if scene is not None:
        return convert_image_format(scene.image(), format)
    return read_image(dataset_dict["file_name"], format)


def load_sem_seg(dataset_dict: dict) -> np.ndarray | None:
    """The semantic label map (HxW integers, ignore = 255 usually), or None if it has none."""
    if "sem_seg_file_name" in dataset_dict:
        label = read_image(dataset_dict["sem_seg_file_name"])
        if label.ndim != 2:
            raise ValueError(
                f"semantic label {dataset_dict['sem_seg_file_name']} has {label.shape[2]} channels; "
                "it must be a single-channel PNG of class indices"
            )
        return label
    scene = dataset_dict.get("scene")
    return scene.sem_seg() if scene is not None else None


def load_pan_seg(dataset_dict: dict) -> np.ndarray | None:
    """The panoptic segment-id map (HxW int64, 0 = void), or None if it has none."""
    if "pan_seg_file_name" in dataset_dict:
        return rgb2id(read_image(dataset_dict["pan_seg_file_name"], "RGB"))
    scene = dataset_dict.get("scene")
    return scene.pan_seg() if scene is not None else None


def rgb2id(color: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG colours (HxWx3) -> segment ids: ``R + 256 G + 256^2 B`` (int64)."""
    color = np.asarray(color)
    if color.ndim != 3 or color.shape[2] != 3:
        raise ValueError(f"rgb2id expects an HxWx3 array, got shape {color.shape}")
    color = color.astype(np.int64)
    return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids (HxW) -> COCO panoptic colours (HxWx3 uint8); inverse of ``rgb2id``."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= 256**3:
        raise ValueError("panoptic segment ids must lie in [0, 256^3)")
    return np.stack([ids % 256, (ids // 256) % 256, ids // (256 * 256)], axis=-1).astype(np.uint8)
