"""``DetectionCheckpointer``: fvcore's ``Checkpointer`` with safe loading and crash-safe saving.

Saving (main process only): ``<save_dir>/<name>.pth`` is written atomically (temporary file in the
same directory, fsync, ``os.replace``), then ``last_checkpoint`` is replaced atomically in the same
way, so a process killed at any moment leaves ``last_checkpoint`` naming a complete file.

Loading:

- local paths; ``http(s)://`` URLs and bare released model names
  (``maskdino_r50_coco_instance_seg_50ep``) go through ``detrex_ext.model_zoo``'s download cache
  (``$DETREX_CACHE``, default ``~/.cache/detrex_ext``: resumable, progress bar, sha256 checked
  against the zoo table for released files and recorded on first download otherwise,
  ``DETREX_OFFLINE=1`` honoured); ``detectron2://`` and other iopath schemes go through iopath
  (``$FVCORE_CACHE``); ``?matching_heuristics=True`` in a URL turns suffix matching on;
- ``torch.load(..., weights_only=True)``; ``.pkl`` through a restricted unpickler;
- a file without a ``"model"`` entry is taken to be the state dict itself;
- the model may adapt foreign layouts: if it has ``adapt_checkpoint_state_dict(state_dict) ->
  state_dict``, that is called *before* matching, so shape filtering and the report of missing /
  unexpected / mismatched keys see the adapted names. It should be idempotent (an already adapted
  dict passes through unchanged), because ``load_state_dict`` pre-hooks the model registers may
  run again on the result;
- problems are logged as one table (missing / unexpected / shape-mismatched keys).
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import torch
from fvcore.common.checkpoint import Checkpointer, _filter_reused_missing_keys, _IncompatibleKeys
from torch import nn

from detrex_ext.utils import comm
from detrex_ext.utils.file_io import PathManager, atomic_write, is_local_path

from .key_matching import align_by_suffix, incompatible_keys_table
from .safe_load import load_pickle_weights, load_torch_weights

__all__ = ["DetectionCheckpointer"]

# buffers a model recomputes itself: not worth a warning when a checkpoint lacks them
_SILENTLY_MISSING = ("pixel_mean", "pixel_std")


def _url_checkpoint(url: str) -> str:
    """A verified local copy of an ``http(s)`` URL, from the model zoo's download cache.

    A released checkpoint's URL is fetched as that model (its table sha256 applies); any other URL
    is cached under ``<cache>/urls/<host>/<path>`` so equal file names from different places never
    collide.
    """
    from detrex_ext.model_zoo import cached_download, get_cache_dir, get_checkpoint
    from detrex_ext.model_zoo.catalog import MODEL_ZOO

    for name, entry in MODEL_ZOO.items():
        if entry.url == url:
            return str(get_checkpoint(name))
    parts = urlparse(url)
    folder = get_cache_dir() / "urls" / parts.netloc.replace(":", "_")
    folder = folder.joinpath(*[p for p in os.path.dirname(parts.path).split("/") if p])
    return str(cached_download(url, cache_dir=folder))


def _model_zoo_checkpoint(name: str) -> str:
    """The cached (downloaded and verified on first use) file of a released model name."""
    from detrex_ext.model_zoo import get_checkpoint

    try:
        return str(get_checkpoint(name))
    except KeyError as e:
        raise FileNotFoundError(
            f"Checkpoint {name!r} is neither a file, a URL nor a released model name "
            f"({e.args[0] if e.args else 'unknown name'})"
        ) from None


class DetectionCheckpointer(Checkpointer):
    """Save and load models plus checkpointables (``trainer``, ``ema_state``...).

    Args:
        model: the model (DDP wrappers are unwrapped).
        save_dir: where checkpoints and ``last_checkpoint`` live.
        save_to_disk: default: only the main process writes.
        checkpointables: objects with ``state_dict``/``load_state_dict`` saved under their key.
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str = "",
        *,
        save_to_disk: bool | None = None,
        **checkpointables: Any,
    ) -> None:
        if save_to_disk is None:
            save_to_disk = comm.is_main_process()
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.path_manager = PathManager
        self.logger = logging.getLogger(__name__)
        self._matching_heuristics = False

    # ----------------------------------------------------------------------------- saving
    def save(self, name: str, **kwargs: Any) -> None:
        """Write ``<save_dir>/<name>.pth`` atomically and point ``last_checkpoint`` at it.

        Args:
            name: file name without ``.pth``.
            kwargs: extra entries stored at the top level (e.g. ``iteration``).
        """
        if not self.save_dir or not self.save_to_disk:
            return
        data: dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        if is_local_path(save_file):
            os.makedirs(self.save_dir, exist_ok=True)
            with atomic_write(save_file, "wb") as f:
                torch.save(data, f)
        else:
            with self.path_manager.open(save_file, "wb") as f:
                torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Atomically replace ``last_checkpoint`` with the given file name."""
        save_file = os.path.join(self.save_dir, "last_checkpoint")
        if is_local_path(save_file):
            with atomic_write(save_file, "w") as f:
                f.write(last_filename_basename)
        else:
            with self.path_manager.open(save_file, "w") as f:
                f.write(last_filename_basename)

    # ----------------------------------------------------------------------------- loading
    def load(self, path: str, checkpointables: list[str] | None = None) -> dict[str, Any]:
        """Load a checkpoint (see the module docstring for sources and formats).

        Args:
            path: file path or URL; empty means "nothing to load".
            checkpointables: names to restore besides the model; None restores all present.

        Returns:
            The checkpoint entries not consumed (e.g. ``iteration``).
        """
        self._matching_heuristics = False
        if path:
            path = self._prepare_path(path)
        return super().load(path, checkpointables=checkpointables)

    def _prepare_path(self, path: str) -> str:
        """Resolve a URL (honouring ``?matching_heuristics=``) to a local file that every rank can
        read."""
        parsed = urlparse(path)
        query = parse_qs(parsed.query)
        if "matching_heuristics" in query:
            self._matching_heuristics = query.pop("matching_heuristics")[0].lower() == "true"
            path = parsed._replace(query="&".join(f"{k}={v[0]}" for k, v in query.items()))
            path = path.geturl()
        if not os.path.isfile(path) and is_local_path(path) and not os.path.dirname(path):
            path = _model_zoo_checkpoint(path)
        elif urlparse(path).scheme in ("http", "https"):
            path = _url_checkpoint(path)
        if not os.path.isfile(path):
            local = self.path_manager.get_local_path(path)
            if not os.path.isfile(local):
                raise FileNotFoundError(f"Checkpoint {path} not found")
            path = local
        if comm.get_world_size() > 1:
            visible = comm.all_gather(os.path.isfile(path))
            if not all(visible):
                blind = [rank for rank, ok in enumerate(visible) if not ok]
                raise OSError(
                    f"Checkpoint {path} is not readable on rank(s) {blind}; put it on a file "
                    "system that every machine can read."
                )
        return path

    def _load_file(self, filename: str) -> dict[str, Any]:
        if filename.endswith(".pkl"):
            data = load_pickle_weights(filename)
            if not (isinstance(data, dict) and "model" in data and "__author__" in data):
                raise ValueError(
                    f"{filename} is not a detectron2 model-zoo .pkl (a dict with 'model' and "
                    "'__author__'); Caffe2/Detectron1 pickles are not supported: convert them to "
                    "a .pth state dict first."
                )
            self.logger.info(f"Reading a weight file from '{data['__author__']}'")
            self._matching_heuristics |= bool(data.get("matching_heuristics", False))
            return {"model": data["model"], **{k: v for k, v in data.items() if k != "model"}}
        data = load_torch_weights(filename)
        if not isinstance(data, dict):
            raise ValueError(f"{filename} holds a {type(data).__name__}, not a state dict")
        if "model" not in data:
            data = {"model": data}
        return data

    def _load_model(self, checkpoint: dict[str, Any]) -> _IncompatibleKeys:
        state_dict = checkpoint.pop("model")
        state_dict = {
            k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
            for k, v in state_dict.items()
        }
        if state_dict and all(k.startswith("module.") for k in state_dict):
            state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
        adapt = getattr(self.model, "adapt_checkpoint_state_dict", None)
        if callable(adapt):
            adapted = adapt(state_dict)
            if not isinstance(adapted, dict):
                raise TypeError(
                    f"{type(self.model).__name__}.adapt_checkpoint_state_dict must return a dict"
                )
            state_dict = adapted
        if self._matching_heuristics:
            state_dict = align_by_suffix(self.model.state_dict().keys(), state_dict)
        checkpoint["model"] = state_dict
        # fvcore: drop shape-mismatched entries, then load_state_dict(strict=False)
        incompatible = super()._load_model(checkpoint)
        buffers = dict(self.model.named_buffers(recurse=False))
        missing = [
            k for k in incompatible.missing_keys if not (k in buffers and k in _SILENTLY_MISSING)
        ]
        return _IncompatibleKeys(
            missing, incompatible.unexpected_keys, incompatible.incorrect_shapes
        )

    def _log_incompatible_keys(self, incompatible: _IncompatibleKeys) -> None:
        missing = _filter_reused_missing_keys(self.model, list(incompatible.missing_keys))
        table = incompatible_keys_table(
            missing, incompatible.unexpected_keys, incompatible.incorrect_shapes
        )
        if table:
            self.logger.warning(
                f"Weights loaded with {len(incompatible.incorrect_shapes)} shape mismatch(es), "
                f"{len(missing)} missing and {len(incompatible.unexpected_keys)} unexpected "
                f"key(s):\n{table}"
            )
        else:
            self.logger.info("All model weights were loaded; every checkpoint key was used.")
