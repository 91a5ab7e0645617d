"""``ImageList``: images of different sizes padded into one batch tensor."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F


class ImageList:
    """A padded batch ``tensor [B, C, H_pad, W_pad]`` plus each image's true ``(h, w)`` in
    ``image_sizes``. ``image_list[i]`` returns image i without its padding.
    """

    def __init__(self, tensor: torch.Tensor, image_sizes: list[tuple[int, int]]):
        self.tensor = tensor
        self.image_sizes = image_sizes

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __getitem__(self, idx: int) -> torch.Tensor:
        h, w = self.image_sizes[idx]
        return self.tensor[idx, ..., :h, :w]

    def to(self, *args: Any, **kwargs: Any) -> ImageList:
        return ImageList(self.tensor.to(*args, **kwargs), self.image_sizes)

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    @staticmethod
    def from_tensors(
        tensors: Sequence[torch.Tensor],
        size_divisibility: int = 0,
        pad_value: float = 0.0,
        padding_constraints: dict[str, int] | None = None,
    ) -> ImageList:
        """Pad images ``[..., H_i, W_i]`` (same leading dims) at the bottom/right into one batch.

        Args:
            tensors: the images, e.g. each ``[C, H_i, W_i]``.
            size_divisibility: when > 1, round the padded H and W up to a multiple of it.
            pad_value: value written into the padding.
            padding_constraints: optional ``{"size_divisibility": int, "square_size": int}``
                (detectron2's option); ``square_size > 0`` pads to that square.

        Returns:
            ``ImageList`` with ``tensor [B, ..., H_pad, W_pad]`` and ``image_sizes [(h, w)]``.
        """
        if not isinstance(tensors, (list, tuple)) or len(tensors) == 0:
            raise ValueError("ImageList.from_tensors expects a non-empty list of tensors")
        leading = tensors[0].shape[:-2]
        for t in tensors:
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"expected tensors, got {type(t)}")
            if t.shape[:-2] != leading:
                raise ValueError(
                    f"all images need the same leading dimensions, got {tuple(leading)} and "
                    f"{tuple(t.shape[:-2])}"
                )
        image_sizes = [(int(t.shape[-2]), int(t.shape[-1])) for t in tensors]
        max_h = max(s[0] for s in image_sizes)
        max_w = max(s[1] for s in image_sizes)
        if padding_constraints is not None:
            square_size = padding_constraints.get("square_size", 0)
            if square_size > 0:
                max_h = max_w = square_size
            size_divisibility = padding_constraints.get("size_divisibility", size_divisibility)
        if size_divisibility > 1:
            stride = size_divisibility
            max_h = (max_h + stride - 1) // stride * stride
            max_w = (max_w + stride - 1) // stride * stride
        if len(tensors) == 1:
            h, w = image_sizes[0]
            batched = F.pad(tensors[0], [0, max_w - w, 0, max_h - h], value=pad_value)[None]
        else:
            batched = tensors[0].new_full((len(tensors), *leading, max_h, max_w), pad_value)
            for i, img in enumerate(tensors):
                batched[i, ..., : img.shape[-2], : img.shape[-1]].copy_(img)
        return ImageList(batched.contiguous(), image_sizes)
