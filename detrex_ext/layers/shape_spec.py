"""``ShapeSpec``: the channels / size / stride description of a feature map (detectron2's name)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShapeSpec:
    """Static description of a feature map ``[B, channels, height, width]``.

    Any field may be ``None`` when unknown. ``stride`` is the feature map's downsampling factor
    relative to the network input (e.g. 4 for ``res2``), in input pixels per feature pixel.
    """

    channels: int | None = None
    height: int | None = None
    width: int | None = None
    stride: int | None = None
