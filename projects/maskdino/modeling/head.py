"""MaskDINOHead: joins the pixel decoder (`MaskDINOEncoder`) and the predictor (`MaskDINODecoder`).

The attribute names `pixel_decoder` and `predictor` are the official ones (state_dict prefixes
`sem_seg_head.pixel_decoder.*` and `sem_seg_head.predictor.*`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from torch import Tensor, nn

from .decoder import MaskDINODecoder
from .pixel_decoder import MaskDINOEncoder

__all__ = ["MaskDINOHead"]

logger = logging.getLogger(__name__)


class MaskDINOHead(nn.Module):
    """Pixel decoder + transformer decoder.

    Args:
        num_classes: number of classes C; a predictor built for another count gets its class
            layers rebuilt for C (detrex's configs set only ``sem_seg_head.num_classes``).
        pixel_decoder: a `MaskDINOEncoder`.
        transformer_predictor: a `MaskDINODecoder`.
        loss_weight: kept for config compatibility with the official head (unused there too).
        ignore_value: label of ignored pixels in semantic targets (255).
        input_shape: unused; accepted so detrex-style configs port unchanged.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        pixel_decoder: MaskDINOEncoder,
        transformer_predictor: MaskDINODecoder,
        loss_weight: float = 1.0,
        ignore_value: int = 255,
        input_shape: Mapping | None = None,
    ) -> None:
        super().__init__()
        predictor_classes = getattr(transformer_predictor, "num_classes", num_classes)
        if predictor_classes != num_classes:
            if not hasattr(transformer_predictor, "set_num_classes"):
                raise ValueError(
                    f"MaskDINOHead num_classes={num_classes} but its transformer_predictor was "
                    f"built with num_classes={predictor_classes}; set `model.num_classes` once "
                    "and let the other config keys interpolate it"
                )
            # detrex's configs set the class count on sem_seg_head.num_classes only; the head's
            # count is the one its outputs and the criterion use
            logger.warning(
                f"sem_seg_head.num_classes={num_classes} but its transformer_predictor has "
                f"num_classes={predictor_classes}: rebuilding the predictor's class layers for "
                f"{num_classes} classes (set both, or model.num_classes in this project's configs)"
            )
            transformer_predictor.set_num_classes(num_classes)
        self.num_classes = num_classes
        self.pixel_decoder = pixel_decoder
        self.predictor = transformer_predictor
        self.loss_weight = loss_weight
        self.ignore_value = ignore_value
        self.common_stride = 4

    def forward(
        self,
        features: Mapping[str, Tensor],
        mask: Tensor | None = None,
        targets: list[dict] | None = None,
    ) -> tuple[dict, dict | None]:
        """features: backbone maps by name. Returns the predictor's `(outputs, dn_meta)`."""
        mask_features, _, multi_scale_features = self.pixel_decoder.forward_features(features, mask)
        return self.predictor(multi_scale_features, mask_features, mask, targets=targets)
