"""Get a released model by name: its config, its checkpoint (downloaded once, verified) or both.

Names are config names without ``.py`` (``maskdino_r50_coco_instance_seg_50ep``); ``name.py`` and
``maskdino/name.py`` are accepted too. ``DETREX_ZOO_MIRROR`` replaces the release location by
another base URL or a local directory holding the same file names (for mirrors, air-gapped
machines, or a local test server). The table, the downloads and name resolution live in
:mod:`detrex_ext.checkpoint` (the checkpointer loads released names too); this module builds on it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from detrex_ext.checkpoint import DetectionCheckpointer
from detrex_ext.checkpoint.catalog import get_checkpoint, get_checkpoint_url, get_entry
from detrex_ext.checkpoint.download import cached_download, is_url

logger = logging.getLogger(__name__)


def get_config(name: str, trained: bool = False):
    """The lazy config of a released model.

    With ``trained=True``, ``train.init_checkpoint`` is set to the checkpoint's URL (as detectron2's
    ``model_zoo.get_config`` does), so training from it fine-tunes the released weights.
    """
    from detrex_ext.config import get_config as get_packaged_config

    cfg = get_packaged_config(get_entry(name).config_path)
    if trained:
        cfg.train.init_checkpoint = get_checkpoint_url(name)
    return cfg


def get(name: str, trained: bool = True, device: str | None = None, **download_kwargs: Any):
    """Build the model of ``name`` and, with ``trained=True``, load its released weights.

    Args:
        name: a released model name (see ``tools/model_zoo.py list``).
        trained: download (once) and load the released checkpoint.
        device: move the model there; None leaves it where its constructor put it (the CPU).
        download_kwargs: forwarded to :func:`get_checkpoint`.

    Returns:
        the ``nn.Module``; in eval mode when ``trained`` (ready for inference, unlike detectron2's
        ``model_zoo.get`` which always returns training mode), in training mode otherwise.
    """
    from detrex_ext.config import instantiate

    cfg = get_config(name)
    model = instantiate(cfg.model)
    if device is not None:
        model = model.to(device)
    if trained:
        path = get_checkpoint(name, **download_kwargs)
        DetectionCheckpointer(model).load(str(path))
        model.eval()
    return model


def resolve_weights(weights: str | os.PathLike, **download_kwargs: Any) -> Path:
    """A local file for ``weights``: a released model name, an ``http(s)`` URL or a path."""
    weights = str(weights)
    if is_url(weights):
        return cached_download(weights, **download_kwargs)
    local = Path(weights).expanduser()
    if local.is_file():
        return local
    try:
        return get_checkpoint(weights, **download_kwargs)
    except KeyError as error:
        raise FileNotFoundError(
            f"weights {weights!r} are neither an existing file, an http(s) URL nor a released "
            f"model name ({error.args[0]})"
        ) from None
