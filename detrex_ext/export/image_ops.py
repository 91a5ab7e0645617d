"""Image and map resizing for the ONNX runtime, with numpy and PIL only (no torch import).

The input side reproduces the Predictor's test-time resize (``ResizeShortestEdge``: PIL bilinear,
sizes rounded as ``int(x + 0.5)``) and then fits and pads the image into the exported canvas. The
output side maps per-pixel results from the canvas back to the original image: probabilities
bilinearly (as ``F.interpolate(mode="bilinear", align_corners=False)``), label maps by nearest
neighbour (pixel centres, as ``mode="nearest-exact"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "fitted_size",
    "pad_to_canvas",
    "prepare_image",
    "resize_bilinear",
    "resize_image",
    "resize_nearest",
]

_PIL_INTERP = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def fitted_size(
    height: int, width: int, resize: dict[str, Any] | None, canvas: Sequence[int]
) -> tuple[int, int]:
    """The size an ``height x width`` image is resized to before padding into ``canvas``.

    The config's test-time resize first (``ResizeShortestEdge``: short side to its length, long
    side capped at ``max_size``); when the result does not fit into the canvas it is scaled down
    (aspect ratio kept) until it does. Without a resize rule, images that fit are not resized.
    """
    new_h, new_w = float(height), float(width)
    if resize is not None:
        short, max_size = resize["short_edge_length"], resize["max_size"]
        scale = short / min(height, width)
        new_h, new_w = (short, scale * width) if height < width else (scale * height, short)
        if max(new_h, new_w) > max_size:
            cap = max_size / max(new_h, new_w)
            new_h, new_w = new_h * cap, new_w * cap
    out_h, out_w = int(new_h + 0.5), int(new_w + 0.5)
    canvas_h, canvas_w = int(canvas[0]), int(canvas[1])
    if out_h > canvas_h or out_w > canvas_w:
        fit = min(canvas_h / height, canvas_w / width)
        out_h = min(canvas_h, max(1, int(height * fit + 0.5)))
        out_w = min(canvas_w, max(1, int(width * fit + 0.5)))
    return out_h, out_w


def resize_image(image: np.ndarray, size: Sequence[int], interp: str = "bilinear") -> np.ndarray:
    """HWC uint8 ``image`` resized to ``size`` (H, W) with PIL (the Predictor's resize)."""
    height, width = int(size[0]), int(size[1])
    if image.shape[:2] == (height, width):
        return image
    resized = Image.fromarray(image).resize((width, height), _PIL_INTERP[interp])
    return np.asarray(resized)


def pad_to_canvas(image: np.ndarray, canvas: Sequence[int], value: Sequence[int]) -> np.ndarray:
    """HWC uint8 ``image`` at the top-left of a ``canvas`` (H, W) filled with ``value``, as CHW."""
    height, width = image.shape[:2]
    out = np.empty((3, int(canvas[0]), int(canvas[1])), dtype=np.uint8)
    out[:] = np.asarray(value, dtype=np.uint8).reshape(3, 1, 1)
    out[:, :height, :width] = image.transpose(2, 0, 1)
    return out


def prepare_image(rgb: np.ndarray, spec: dict[str, Any]) -> tuple[np.ndarray, dict[str, int]]:
    """An HWC uint8 RGB image as the graph input ``[3, H, W]`` described by the metadata's
    ``input`` entry (resize rule, size, pad value), with its original and resized sizes."""
    height, width = rgb.shape[:2]
    canvas_size = (int(spec["height"]), int(spec["width"]))
    resize = spec.get("resize")
    new_h, new_w = fitted_size(height, width, resize, canvas_size)
    resized = resize_image(rgb, (new_h, new_w), (resize or {}).get("interp", "bilinear"))
    canvas = pad_to_canvas(resized, canvas_size, spec["pad_value"])
    return canvas, {"height": height, "width": width, "resized_h": new_h, "resized_w": new_w}


def _source_index(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps along one axis (PyTorch's align_corners=False rule): lower and upper
    source indices and the weight of the upper one."""
    scale = in_size / out_size
    real = np.maximum((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    low = np.minimum(np.floor(real).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, (real - low).astype(np.float32)


def resize_bilinear(maps: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``[N, h, w]`` float maps -> ``[N, H, W]`` (bilinear, align_corners=False, no antialias)."""
    out_h, out_w = int(size[0]), int(size[1])
    if maps.shape[-2:] == (out_h, out_w):
        return maps
    low, high, frac = _source_index(maps.shape[-2], out_h)
    rows = maps[:, low] * (1 - frac)[None, :, None] + maps[:, high] * frac[None, :, None]
    low, high, frac = _source_index(maps.shape[-1], out_w)
    return rows[:, :, low] * (1 - frac) + rows[:, :, high] * frac


def resize_nearest(labels: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``[..., h, w]`` label map -> ``[..., H, W]``, nearest pixel centre."""
    out_h, out_w = int(size[0]), int(size[1])
    in_h, in_w = labels.shape[-2:]
    if (in_h, in_w) == (out_h, out_w):
        return labels
    rows = np.minimum(((np.arange(out_h) + 0.5) * in_h / out_h).astype(np.int64), in_h - 1)
    cols = np.minimum(((np.arange(out_w) + 0.5) * in_w / out_w).astype(np.int64), in_w - 1)
    return labels[..., rows[:, None], cols[None, :]]
