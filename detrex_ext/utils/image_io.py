"""Reading images into uint8 RGB arrays with PIL and numpy only (no torch import), so that
runtimes without PyTorch (the ONNX predictor) read images exactly as training and the Predictor do.
"""

from __future__ import annotations

import os
from typing import Union

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "SUPPORTED_IMAGE_FORMATS",
    "ImageInput",
    "convert_image_format",
    "load_image_rgb",
    "read_image",
]

SUPPORTED_IMAGE_FORMATS = ("RGB", "BGR", "L")

ImageInput = Union[str, os.PathLike, np.ndarray, Image.Image]


def convert_image_format(image: Image.Image | np.ndarray, format: str | None) -> np.ndarray:
    """Convert a PIL image or an RGB array to ``format``.

    Args:
        image: PIL image (any mode), or HxWx3 uint8 RGB array.
        format: "RGB", "BGR", "L" (returns HxWx1), or None to keep the PIL mode as it is (label
            PNGs: palette indices stay indices).

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
        # grayscale, palette, RGBA, CMYK... all become RGB (alpha is dropped)
        image = image.convert("L" if format == "L" else "RGB")
    array = np.asarray(image)
    if format == "BGR":
        array = array[:, :, ::-1]
    elif format == "L":
        array = array[:, :, None]
    return np.ascontiguousarray(array)


def read_image(file_name: str, format: str | None = None) -> np.ndarray:
    """Read an image file, applying its EXIF orientation, in ``format`` (see
    ``convert_image_format``)."""
    with open(file_name, "rb") as f:
        image = Image.open(f)
        image = ImageOps.exif_transpose(image) or image
        return convert_image_format(image, format)


def load_image_rgb(image: ImageInput) -> np.ndarray:
    """HWC uint8 RGB array from a path, a PIL image or an HWC/HW uint8 array."""
    if isinstance(image, (str, os.PathLike)):
        return np.ascontiguousarray(read_image(str(image), format="RGB"))
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3:
            hint = " (CHW? transpose to HWC)" if image.ndim == 3 and image.shape[0] == 3 else ""
            raise ValueError(f"expected an HWC RGB image array, got shape {image.shape}{hint}")
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
