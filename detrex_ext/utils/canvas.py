"""``Canvas``: one image to draw on with Pillow (blended masks, boxes, points, labels), and
``VisImage``, detectron2's name for the finished drawing. ``Visualizer`` builds on it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .visual_inputs import as_rgb_array, load_font, mask_edges

__all__ = ["Canvas", "VisImage"]

Color = tuple[int, int, int]


class VisImage:
    """The drawing of a ``Canvas`` / ``Visualizer`` (``visualizer.output``).

    ``get_image()`` is HWC uint8 RGB, resized by ``scale``; ``save(path)`` writes it (PNG).
    """

    def __init__(self, visualizer: Canvas) -> None:
        self._visualizer = visualizer
        self.scale = visualizer.scale
        self.height, self.width = visualizer.height, visualizer.width

    def get_image(self) -> np.ndarray:
        return np.asarray(self._visualizer.get_image())

    def save(self, filepath: str) -> None:
        self._visualizer.save(filepath)


class Canvas:
    """A copy of one image that masks are blended into; boxes, points and labels are queued
    and rendered above the masks by ``get_image``.

    Args:
        image: HWC uint8 RGB numpy array, PIL image, or CHW tensor.
        scale: the output image is ``scale`` times the input size.
        alpha: default opacity of filled masks.
        font_size: label height in pixels; default scales with the image size.
    """

    def __init__(
        self, image: Any, scale: float = 1.0, *, alpha: float = 0.5, font_size: int | None = None
    ):
        self.image = as_rgb_array(image)
        self.height, self.width = self.image.shape[:2]
        self.scale = scale
        self.alpha = alpha
        self.font = load_font(font_size or max(10, min(self.height, self.width) // 40))
        self._labels: list[tuple[tuple[float, float], str, Color]] = []
        self._boxes: list[tuple[Sequence[float], Color]] = []
        self._points: list[tuple[float, float, Color]] = []

    @property
    def output(self) -> VisImage:
        return VisImage(self)

    def draw_mask(
        self,
        mask: np.ndarray,
        color: tuple[int, int, int],
        *,
        alpha: float | np.ndarray | None = None,
        edge_color: tuple[int, int, int] | None = None,
        outline: bool = True,
    ) -> Canvas:
        """Blend ``color`` into the pixels of a bool mask [H, W] and outline it (in
        ``edge_color``, default a darker ``color``). ``alpha`` may be an ``[H, W]`` array of
        per-pixel opacities."""
        if mask.shape != (self.height, self.width):
            raise ValueError(
                f"mask of shape {mask.shape} does not match the image ({self.height}, {self.width}); "
                "draw outputs at the image's resolution"
            )
        alpha = self.alpha if alpha is None else alpha
        if not np.isscalar(alpha):
            alpha = np.asarray(alpha, dtype=np.float32)[mask][:, None]
        region = self.image[mask].astype(np.float32)
        self.image[mask] = (region * (1 - alpha) + np.asarray(color) * alpha).astype(np.uint8)
        if outline:
            edge = tuple(int(c * 0.6) for c in color) if edge_color is None else edge_color
            self.image[mask_edges(mask)] = edge
        return self

    def draw_box(self, box_xyxy: Sequence[float], color: tuple[int, int, int]) -> Canvas:
        """Queue a box outline (drawn above all masks when the image is rendered)."""
        self._boxes.append(([float(v) for v in box_xyxy], color))
        return self

    def draw_text(self, position_xy: tuple[float, float], text: str, color) -> Canvas:
        """Queue a label with its top-left corner at ``position_xy`` on a coloured background."""
        self._labels.append((position_xy, text, color))
        return self

    def draw_point(self, x: float, y: float, color: Color) -> Canvas:
        """Queue a dot (keypoints)."""
        self._points.append((x, y, color))
        return self

    def grey_outside(self, keep: np.ndarray | None) -> None:
        """Turn the image grey except where the bool ``[H, W]`` mask ``keep`` is True."""
        grey = self.image.astype(np.float32).mean(axis=2, keepdims=True).astype(np.uint8)
        grey = np.repeat(grey, 3, axis=2)
        if keep is not None:
            grey[keep] = self.image[keep]
        self.image = grey

    def get_image(self) -> Image.Image:
        """The drawing as a PIL image (boxes, keypoints and labels above the masks), resized
        by ``scale``."""
        canvas = Image.fromarray(self.image)
        draw = ImageDraw.Draw(canvas)
        line = max(1, min(self.height, self.width) // 300 + 1)
        for (x0, y0, x1, y1), color in self._boxes:
            draw.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=color, width=line)
        for x, y, color in self._points:
            draw.ellipse([x - line, y - line, x + line, y + line], fill=color)
        for (x, y), text, color in self._labels:
            left, top, right, bottom = draw.textbbox((0, 0), text, font=self.font)
            w, h = right - left + 4, bottom - top + 4
            x = min(max(0.0, x), max(0.0, self.width - w))
            y = min(max(0.0, y), max(0.0, self.height - h))
            draw.rectangle([x, y, x + w, y + h], fill=tuple(int(c * 0.7) for c in color))
            draw.text((x + 2 - left, y + 2 - top), text, fill=(255, 255, 255), font=self.font)
        if self.scale != 1.0:
            size = (max(1, round(self.width * self.scale)), max(1, round(self.height * self.scale)))
            canvas = canvas.resize(size, Image.BILINEAR)
        return canvas

    def get_output(self) -> VisImage:
        """``self.output`` (detectron2's name)."""
        return self.output

    def save(self, path: str) -> None:
        """Write the drawing as a PNG file."""
        self.get_image().save(path, format="PNG")
