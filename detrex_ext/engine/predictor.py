"""Run a lazy-config model on images: the ``DefaultPredictor`` that detectron2 lacks for lazy configs.

Example::

    predictor = Predictor.from_config("maskdino_r50_coco_instance_seg_50ep")   # zoo name
    predictor = Predictor.from_config("my_config.py", "model_final.pth", overrides=["model.num_queries=100"])
    outputs = predictor("street.jpg")                       # one dict
    outputs = predictor([array_rgb, pil_image], top_k=20)   # a list, one dict per image

Inputs are image paths, HWC uint8 RGB numpy arrays or PIL images. Every image goes through the
config's test-time augmentations (``dataloader.test.mapper.augmentation``: the resize used for
evaluation); outputs come back at the original resolution, in detectron2's format (``instances``
with ``pred_boxes``/``scores``/``pred_classes``/``pred_masks``, ``sem_seg``, ``panoptic_seg``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detrex_ext.utils.cli import add_model_arguments  # noqa: F401  (the tools import it here)
from detrex_ext.utils.image_io import ImageInput, load_image_rgb
from detrex_ext.utils.prediction_filters import check_score_threshold, check_top_k
from detrex_ext.utils.threads import configure_cpu_threads

logger = logging.getLogger(__name__)

_TEST_AUGMENTATION_KEYS = (
    "dataloader.test.mapper.augmentation",
    "dataloader.test.mapper.augmentations",
)
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def released_model_name(config: Any) -> str | None:
    """``config`` itself when it is a bare released-model name (not a file), else None."""
    from detrex_ext.model_zoo import MODEL_ZOO

    if isinstance(config, str) and config in MODEL_ZOO and not Path(config).is_file():
        return config
    return None


def load_config(config: Any, overrides: Sequence[str] = ()) -> Any:
    """A lazy config from a file path, a released model name, a packaged path
    (``"maskdino/<name>.py"``) or an already loaded config; ``overrides`` (``key=value``) applied.
    """
    from detrex_ext import model_zoo
    from detrex_ext.config import LazyConfig, get_config

    if isinstance(config, (str, os.PathLike)):
        if Path(config).expanduser().is_file():
            cfg = LazyConfig.load(str(Path(config).expanduser()))
        elif released_model_name(config):
            cfg = model_zoo.get_config(config)
        else:
            cfg = get_config(str(config))  # a packaged path; raises naming the places it looked
    else:
        cfg = config
    if overrides:
        LazyConfig.apply_overrides(cfg, list(overrides))
    return cfg


def build_model(
    cfg: Any, weights: str | os.PathLike | None = None, device: str | torch.device | None = None
) -> torch.nn.Module:
    """Instantiate ``cfg.model``, move it to ``device`` and load ``weights`` (a path, an http(s) URL
    or a released model name; downloads are cached and verified) with ``weights_only=True``.
    The model is returned in eval mode.
    """
    from detrex_ext.checkpoint import DetectionCheckpointer
    from detrex_ext.config import instantiate
    from detrex_ext.model_zoo import resolve_weights

    model = instantiate(cfg.model)
    if device is not None:
        model = model.to(device)
    if weights:
        DetectionCheckpointer(model).load(str(resolve_weights(weights)))
    else:
        logger.warning("no weights given: the model keeps its random initialisation")
    return model.eval()


def inference_augmentations(cfg: Any) -> list[Any]:
    """The instantiated test-time augmentations of a config (empty when it has none)."""
    from detrex_ext.config import instantiate, try_get_key

    augmentations = try_get_key(cfg, *_TEST_AUGMENTATION_KEYS)
    if augmentations is None:
        logger.warning(
            "the config has no dataloader.test.mapper.augmentation: images are not resized"
        )
        return []
    return list(instantiate(augmentations))


def config_metadata(cfg: Any, model: Any = None) -> Any:
    """Dataset metadata (class names, colours) of a config's test set or of the model, or None."""
    from detrex_ext.config import try_get_key

    source = getattr(model, "metadata", None)
    if source is not None:
        if hasattr(source, "thing_classes") or hasattr(source, "stuff_classes"):
            return source
        try:
            found = source.get()  # a lazy holder such as detrex_projects.maskdino's DatasetMetadata
        except (AttributeError, TypeError, KeyError, ValueError):
            found = None
        if found is not None:
            return found
    names = try_get_key(cfg, "dataloader.test.dataset.names", "dataloader.test.dataset.name")
    if isinstance(names, str) or (names is not None and len(names) > 0):
        from detrex_ext.data import MetadataCatalog

        name = names if isinstance(names, str) else names[0]
        return MetadataCatalog.get(name)
    return None


def model_input(
    image: ImageInput, augmentations: Sequence[Any] = (), input_format: str = "RGB"
) -> dict[str, Any]:
    """``{"image": CHW uint8 tensor after the augmentations, in input_format, "height", "width"}``,
    where height/width are the original size (the size the model's outputs are resized to)."""
    rgb = load_image_rgb(image)
    height, width = rgb.shape[:2]
    for augmentation in augmentations:
        rgb = augmentation.get_transform(rgb).apply_image(rgb)
    if input_format == "BGR":
        rgb = rgb[:, :, ::-1]
    tensor = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    return {"image": tensor, "height": height, "width": width}


def filter_instances(instances: Any, score_threshold: float | None, top_k: int | None) -> Any:
    """Instances sorted by descending score, keeping scores >= threshold, at most ``top_k``
    (None: no limit; values < 1 are refused)."""
    check_score_threshold(score_threshold)
    check_top_k(top_k)
    if not instances.has("scores"):
        return instances
    order = torch.argsort(instances.scores, descending=True, stable=True)
    if score_threshold is not None:
        order = order[instances.scores[order] >= score_threshold]
    if top_k is not None:
        order = order[:top_k]
    return instances[order]


class Predictor:
    """Callable wrapper: images in, detectron2-style output dicts out.

    Args:
        model: a model following the detectron2 I/O convention (list of ``{"image", "height",
            "width"}`` dicts in, list of output dicts out); put in eval mode here.
        augmentations: test-time augmentations (objects with ``get_transform(image)``), applied
            in order; typically the config's resize.
        input_format: channel order the model expects, ``"RGB"`` or ``"BGR"``.
        score_threshold: drop instances scoring below this, in [0, 1] (None keeps all).
        top_k: keep at most this many instances per image, >= 1 (None keeps all).
        batch_size: images per forward pass when a list is given.
        amp: ``"bf16"`` or ``"fp16"`` runs the model under autocast; None runs in fp32.
        metadata: dataset metadata (class names) for visualisation; kept as ``self.metadata``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        augmentations: Sequence[Any] = (),
        input_format: str = "RGB",
        score_threshold: float | None = None,
        top_k: int | None = None,
        batch_size: int = 1,
        amp: str | None = None,
        metadata: Any = None,
    ) -> None:
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"input_format must be 'RGB' or 'BGR', got {input_format!r}")
        if amp is not None and amp not in AMP_DTYPES:
            raise ValueError(f"amp must be one of {sorted(AMP_DTYPES)} or None, got {amp!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        check_score_threshold(score_threshold)
        check_top_k(top_k)
        self.model = model.eval()
        if self.device.type == "cpu":
            configure_cpu_threads()  # at most the CPUs this process may use
        self.augmentations = list(augmentations)
        self.input_format = input_format
        self.score_threshold = score_threshold
        self.top_k = top_k
        self.batch_size = batch_size
        self.amp = amp
        self.metadata = metadata

    @classmethod
    def from_config(
        cls,
        config: Any,
        weights: str | os.PathLike | None = None,
        *,
        overrides: Sequence[str] = (),
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> Predictor:
        """Build from a config file, a released model name or a loaded config.

        ``weights``: a path, an http(s) URL or a released model name; defaults to the released
        weights when ``config`` is a model name. ``device``: defaults to CUDA when available.
        Other keyword arguments go to :class:`Predictor`.
        """
        check_score_threshold(kwargs.get("score_threshold"))
        check_top_k(kwargs.get("top_k"))
        cfg = load_config(config, overrides)
        weights = weights or released_model_name(config)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = build_model(cfg, weights, device)
        from detrex_ext.config import try_get_key

        kwargs.setdefault("augmentations", inference_augmentations(cfg))
        kwargs.setdefault(
            "input_format", try_get_key(cfg, "dataloader.test.mapper.image_format", default="RGB")
        )
        kwargs.setdefault("metadata", config_metadata(cfg, model))
        return cls(model, **kwargs)

    @property
    def device(self) -> torch.device:
        for tensor in self.model.parameters():
            return tensor.device
        return torch.device("cpu")

    def preprocess(self, image: ImageInput) -> dict[str, Any]:
        """The model input dict of one image (see :func:`model_input`)."""
        return model_input(image, self.augmentations, self.input_format)

    def postprocess(
        self, output: dict[str, Any], score_threshold: float | None, top_k: int | None
    ) -> dict[str, Any]:
        if "instances" in output:
            output = dict(output)
            output["instances"] = filter_instances(output["instances"], score_threshold, top_k)
        return output

    @torch.inference_mode()
    def forward_batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The model on already preprocessed inputs (under autocast when ``amp`` is set)."""
        if self.amp is None:
            return self.model(inputs)
        with torch.autocast(self.device.type, dtype=AMP_DTYPES[self.amp]):
            return self.model(inputs)

    def __call__(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        score_threshold: float | None = None,
        top_k: int | None = None,
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """Predict one image (returns a dict) or a list of images (returns a list of dicts).

        ``score_threshold``/``top_k`` override the predictor's defaults for this call.
        """
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        check_score_threshold(score_threshold)
        check_top_k(top_k)
        threshold = self.score_threshold if score_threshold is None else score_threshold
        top_k = self.top_k if top_k is None else top_k
        results: list[dict[str, Any]] = []
        for start in range(0, len(items), self.batch_size):
            inputs = [self.preprocess(image) for image in items[start : start + self.batch_size]]
            outputs = self.forward_batch(inputs)
            results.extend(self.postprocess(output, threshold, top_k) for output in outputs)
        return results[0] if single else results
