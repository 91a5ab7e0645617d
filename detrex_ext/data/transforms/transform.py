"""Deterministic transforms that fvcore lacks: resize, extent (crop + scale), polygon-clipping
crop, photometric wrappers (``ColorTransform``, ``PILColorTransform``), SSD colour jitter.

All follow ``fvcore.transforms.Transform``: ``apply_image`` (HxW or HxWxC arrays),
``apply_segmentation`` (nearest), ``apply_coords`` (Nx2 x,y in pixels, where the image spans
[0, W] x [0, H]), ``apply_polygons`` and ``apply_box``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from fvcore.transforms.transform import CropTransform as _FvcoreCropTransform
from fvcore.transforms.transform import NoOpTransform, Transform
from PIL import Image

_RESAMPLING = getattr(Image, "Resampling", Image)
BILINEAR = _RESAMPLING.BILINEAR
NEAREST = _RESAMPLING.NEAREST
BICUBIC = _RESAMPLING.BICUBIC
_TRANSFORM = getattr(Image, "Transform", Image)

__all__ = [
    "BICUBIC",
    "BILINEAR",
    "NEAREST",
    "ColorAugSSDTransform",
    "ColorTransform",
    "CropTransform",
    "ExtentTransform",
    "PILColorTransform",
    "ResizeTransform",
    "clip_polygon_to_box",
]


class ResizeTransform(Transform):
    """Resize from ``(h, w)`` to ``(new_h, new_w)``.

    uint8 images go through PIL (same pixels as detectron2's resize); int32 label maps through
    PIL's 32-bit mode; other dtypes through ``torch.nn.functional.interpolate``.
    """

    def __init__(self, h: int, w: int, new_h: int, new_w: int, interp: int = BILINEAR):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray, interp: int | None = None) -> np.ndarray:
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(
                f"ResizeTransform expected an image of size {(self.h, self.w)}, got {img.shape[:2]}"
            )
        interp = interp if interp is not None else self.interp
        if img.dtype == np.uint8 and (img.ndim == 2 or img.shape[2] in (1, 3, 4)):
            squeeze = img.ndim == 3 and img.shape[2] == 1
            pil = Image.fromarray(img[:, :, 0] if squeeze else img)
            out = np.asarray(pil.resize((self.new_w, self.new_h), interp))
            return out[:, :, None] if squeeze else out
        if img.ndim == 2 and img.dtype == np.int32 and interp == NEAREST:
            resized = Image.fromarray(img).resize((self.new_w, self.new_h), NEAREST)  # mode "I"
            return np.asarray(resized).astype(np.int32)
        return self._resize_with_torch(img, interp)

    def _resize_with_torch(self, img: np.ndarray, interp: int) -> np.ndarray:
        shape = img.shape
        tensor = torch.from_numpy(np.ascontiguousarray(img))
        tensor = tensor.reshape(shape[0], shape[1], -1).permute(2, 0, 1)[None]  # 1,C,H,W
        mode = {NEAREST: "nearest-exact", BILINEAR: "bilinear", BICUBIC: "bicubic"}[interp]
        original_dtype = tensor.dtype
        if mode == "nearest-exact" and not tensor.is_floating_point():
            # integer labels: nearest on float64 keeps every int32/int64 value exact enough
            out = F.interpolate(tensor.double(), (self.new_h, self.new_w), mode=mode)
        else:
            out = F.interpolate(
                tensor.float(), (self.new_h, self.new_w), mode=mode, align_corners=False
            )
        out = out[0].permute(1, 2, 0).reshape(self.new_h, self.new_w, *shape[2:])
        if not original_dtype.is_floating_point:
            out = out.round()
        return out.to(original_dtype).numpy()

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords[:, 0] = coords[:, 0] * (self.new_w * 1.0 / self.w)
        coords[:, 1] = coords[:, 1] * (self.new_h * 1.0 / self.h)
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation, interp=NEAREST)

    def inverse(self) -> Transform:
        return ResizeTransform(self.new_h, self.new_w, self.h, self.w, self.interp)


class ExtentTransform(Transform):
    """Take the region ``src_rect`` of the image and scale it to ``output_size`` (PIL's EXTENT
    transform); pixels of the region outside the image get ``fill``.

    Args:
        src_rect: ``(x0, y0, x1, y1)`` in source pixel coordinates (may exceed the image).
        output_size: ``(h, w)`` of the result.
        interp: PIL resampling filter of images (segmentations always use nearest).
        fill: value of pixels mapped from outside the image (detectron2 hands it to PIL as
            ``fill``, which PIL ignores for EXTENT, so its outside pixels are always 0; here it
            is PIL's ``fillcolor`` and takes effect).
    """

    def __init__(
        self,
        src_rect: tuple[float, float, float, float],
        output_size: tuple[int, int],
        interp: int = BILINEAR,
        fill: float = 0,
    ):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray, interp: int | None = None) -> np.ndarray:
        h, w = self.output_size
        single_channel = img.ndim == 3 and img.shape[2] == 1
        pil_image = Image.fromarray(img[:, :, 0] if single_channel else img)
        pil_image = pil_image.transform(
            size=(w, h),
            method=_TRANSFORM.EXTENT,
            data=tuple(self.src_rect),
            resample=self.interp if interp is None else interp,
            fillcolor=self.fill,
        )
        out = np.asarray(pil_image)
        return out[:, :, None] if single_channel else out

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        # the centre of src_rect goes to the centre of the output, scaled per axis
        h, w = self.output_size
        x0, y0, x1, y1 = self.src_rect
        out = coords.astype(np.float32)
        out[:, 0] = (out[:, 0] - 0.5 * (x0 + x1)) * (w / (x1 - x0)) + 0.5 * w
        out[:, 1] = (out[:, 1] - 0.5 * (y0 + y1)) * (h / (y1 - y0)) + 0.5 * h
        return out

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation, interp=NEAREST)


class ColorTransform(Transform):
    """A photometric transform: ``op(image) -> image`` on numpy arrays; coordinates and
    segmentations are unchanged.

    Args:
        op: callable taking and returning an HxW(xC) numpy image.
    """

    def __init__(self, op):
        if not callable(op):
            raise ValueError(f"ColorTransform needs a callable op, got {op!r}")
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self.op(img)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> Transform:
        return NoOpTransform()


class PILColorTransform(ColorTransform):
    """A ``ColorTransform`` whose ``op`` takes and returns PIL images (e.g. an
    ``ImageEnhance`` operation); the image is converted from and back to numpy around it."""

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.asarray(self.op(Image.fromarray(img)))


def clip_polygon_to_box(
    points: np.ndarray, x0: float, y0: float, x1: float, y1: float
) -> np.ndarray:
    """Clip a polygon to the rectangle [x0, x1] x [y0, y1] (Sutherland-Hodgman).

    Args:
        points: ``[N, 2]`` vertices (x, y).

    Returns:
        ``[M, 2]`` vertices of the clipped polygon (M may be 0). A concave polygon cut into
        several pieces stays one polygon whose pieces are joined by zero-area edges along the
        rectangle's border; rasterising it gives the same pixels as the separate pieces.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return pts
    mins, maxs = pts.min(axis=0), pts.max(axis=0)
    if mins[0] >= x0 and mins[1] >= y0 and maxs[0] <= x1 and maxs[1] <= y1:
        return pts
    if maxs[0] <= x0 or maxs[1] <= y0 or mins[0] >= x1 or mins[1] >= y1:
        return pts[:0]
    for axis, bound, keep_above in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        pts = _clip_half_plane(pts, axis, bound, keep_above)
        if len(pts) == 0:
            break
    return pts


def _clip_half_plane(pts: np.ndarray, axis: int, bound: float, keep_above: bool) -> np.ndarray:
    """Keep the part of the closed polygon ``pts`` with ``pts[:, axis] >= bound`` (or <=)."""
    coord = pts[:, axis]
    inside = coord >= bound if keep_above else coord <= bound
    if inside.all():
        return pts
    if not inside.any():
        return pts[:0]
    prev = np.roll(pts, 1, axis=0)
    prev_inside = np.roll(inside, 1)
    crosses = inside != prev_inside
    delta = pts[:, axis] - prev[:, axis]
    safe = np.where(crosses, delta, 1.0)
    t = np.where(crosses, (bound - prev[:, axis]) / safe, 0.0)
    crossing = prev + t[:, None] * (pts - prev)
    crossing[:, axis] = bound  # exact, despite rounding
    # for every edge (prev -> cur): the crossing point if it crosses, then cur if inside
    candidates = np.stack([crossing, pts], axis=1).reshape(-1, 2)
    keep = np.stack([crosses, inside], axis=1).reshape(-1)
    return candidates[keep]


class CropTransform(_FvcoreCropTransform):
    """fvcore's crop, with polygons clipped to the crop window without needing shapely."""

    def apply_polygons(self, polygons: list[np.ndarray]) -> list[np.ndarray]:
        """Clip each ``[N, 2]`` polygon to the window, then shift it; empty pieces are dropped."""
        x1, y1 = self.x0 + self.w, self.y0 + self.h
        result = []
        for polygon in polygons:
            clipped = clip_polygon_to_box(polygon, self.x0, self.y0, x1, y1)
            if len(clipped) < 3 or _area(clipped) <= 0:
                continue
            result.append(self.apply_coords(clipped.copy()))
        return result


def _area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


class ColorAugSSDTransform(Transform):
    """SSD-style photometric distortion with fixed, pre-drawn parameters (uint8 RGB/BGR).

    Order: brightness, then either contrast -> saturation -> hue or saturation -> hue ->
    contrast. A ``None`` parameter means that step is skipped. Saturation and hue work in HSV;
    ``hue_delta`` is in OpenCV's uint8 hue units (degrees / 2), as in MaskFormer's recipe.
    """

    def __init__(
        self,
        img_format: str = "RGB",
        brightness_delta: float | None = None,
        contrast_alpha: float | None = None,
        saturation_alpha: float | None = None,
        hue_delta: int | None = None,
        contrast_first: bool = True,
    ):
        super().__init__()
        if img_format not in ("RGB", "BGR"):
            raise ValueError(f"ColorAugSSDTransform needs an RGB or BGR image, got {img_format!r}")
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError("ColorAugSSDTransform expects an HxWx3 uint8 image")
        rgb = img if self.img_format == "RGB" else img[:, :, ::-1]
        if self.brightness_delta is not None:
            rgb = _affine_uint8(rgb, 1.0, self.brightness_delta)
        steps = [self._contrast, self._saturation, self._hue]
        if not self.contrast_first:
            steps = [self._saturation, self._hue, self._contrast]
        for step in steps:
            rgb = step(rgb)
        return np.ascontiguousarray(rgb if self.img_format == "RGB" else rgb[:, :, ::-1])

    def _contrast(self, rgb: np.ndarray) -> np.ndarray:
        return rgb if self.contrast_alpha is None else _affine_uint8(rgb, self.contrast_alpha, 0.0)

    def _saturation(self, rgb: np.ndarray) -> np.ndarray:
        if self.saturation_alpha is None:
            return rgb
        hsv = np.array(Image.fromarray(np.ascontiguousarray(rgb)).convert("HSV"))
        hsv[:, :, 1] = _affine_uint8(hsv[:, :, 1], self.saturation_alpha, 0.0)
        return _hsv_to_rgb(hsv)

    def _hue(self, rgb: np.ndarray) -> np.ndarray:
        if self.hue_delta is None:
            return rgb
        hsv = np.array(Image.fromarray(np.ascontiguousarray(rgb)).convert("HSV"))
        shift = round(self.hue_delta * 2 * 256 / 360)  # OpenCV hue units -> PIL's 0..255 scale
        hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int32) + shift) % 256
        return _hsv_to_rgb(hsv)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> Transform:
        return NoOpTransform()


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    image = Image.frombytes(
        "HSV", (hsv.shape[1], hsv.shape[0]), np.ascontiguousarray(hsv).tobytes()
    )
    return np.asarray(image.convert("RGB"))


def _affine_uint8(img: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)
