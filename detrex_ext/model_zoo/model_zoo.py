"""Get a released model by name: its config, its checkpoint (downloaded once, verified) or both.

Names are config names without ``.py`` (``maskdino_r50_coco_instance_seg_50ep``); ``name.py`` and
``maskdino/name.py`` are accepted too. ``DETREX_ZOO_MIRROR`` replaces the release location by
another base URL or a local directory holding the same file names (for mirrors, air-gapped
machines, or a local test server). A mirror may hold ``<file>.sha256`` records (``sha256sum``
format) next to the files: they are checked when the table has no digest.
"""

from __future__ import annotations

import logging
import os
import re
import urllib.request
from pathlib import Path
from typing import Any

from .catalog import get_entry
from .download import cached_download, get_cache_dir, is_offline, is_url, resolve_local_file

logger = logging.getLogger(__name__)

MIRROR_ENV = "DETREX_ZOO_MIRROR"


def get_checkpoint_url(name: str) -> str:
    """Where the checkpoint of ``name`` is fetched from (the release URL unless a mirror is set)."""
    entry = get_entry(name)
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return entry.url
    if is_url(mirror):
        return f"{mirror.rstrip('/')}/{entry.filename}"
    return str(Path(mirror).expanduser() / entry.filename)


def get_checkpoint(
    name: str, *, progress: bool = True, offline: bool | None = None, **download_kwargs: Any
) -> Path:
    """Local path of the verified checkpoint of ``name``, downloading it into the cache if needed.

    ``download_kwargs`` go to :func:`~detrex_ext.model_zoo.download.cached_download`
    (``cache_dir``, ``timeout``, ``max_attempts``, ``retry_wait_s``).
    """
    entry = get_entry(name)
    location = get_checkpoint_url(name)
    if not is_url(location):
        return resolve_local_file(location, entry.sha256)
    sha256 = entry.sha256
    cache_dir = download_kwargs.get("cache_dir")
    cached = Path(cache_dir).expanduser() if cache_dir else get_cache_dir() / "checkpoints"
    first_download = not (cached / entry.filename).exists()
    if sha256 is None and location != entry.url and first_download:
        if not (is_offline() if offline is None else offline):
            sha256 = _mirror_sha256(location)
    return cached_download(
        location,
        entry.filename,
        sha256=sha256,
        offline=offline,
        progress=progress,
        **download_kwargs,
    )


def _mirror_sha256(url: str) -> str | None:
    """The digest a mirror publishes as ``<url>.sha256``, or None when it has none."""
    request = urllib.request.Request(url + ".sha256", headers={"User-Agent": "detrex_ext"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (http only)
            words = response.read(4096).decode("ascii", errors="replace").split()
    except (OSError, ValueError):  # no record there (404), or the mirror is unreachable
        return None
    if words and re.fullmatch(r"[0-9a-fA-F]{64}", words[0]):
        logger.info(f"{url}: sha256 {words[0].lower()} from the mirror's record")
        return words[0].lower()
    return None


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
    from detrex_ext.checkpoint import DetectionCheckpointer
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
