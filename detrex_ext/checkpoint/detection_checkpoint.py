"""``DetectionCheckpointer``: fvcore's ``Checkpointer`` with safe loading and crash-safe saving.

Saving (main process only): ``<save_dir>/<name>.pth`` is written atomically (temporary file in the
same directory, fsync, ``os.replace``), then ``last_checkpoint`` is replaced atomically in the same
way, so a process killed at any moment leaves ``last_checkpoint`` naming a complete file. A save
that fails (a full disk) raises ``CheckpointSaveError`` saying that the previous checkpoint is
intact.

Resuming (``resume_or_load(..., resume=True)``) continues from the file ``last_checkpoint`` names,
or, when that is empty, missing or damaged, from the newest intact checkpoint with a warning
(see ``detrex_ext.checkpoint.resume``).

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

import errno
import logging
import os
import shutil
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import torch
from fvcore.common.checkpoint import Checkpointer, _filter_reused_missing_keys, _IncompatibleKeys
from torch import nn

from detrex_ext.utils import comm
from detrex_ext.utils.file_io import PathManager, atomic_write, is_local_path

from .catalog import MODEL_ZOO, get_checkpoint
from .download import cached_download, get_cache_dir
from .key_matching import LoadReport, align_by_suffix, incompatible_keys_table
from .resume import ResumeError, describe_checkpoints, resume_candidates
from .safe_load import (
    NotACheckpointError,
    check_checkpoint_file,
    check_state_dict,
    load_pickle_weights,
    load_torch_weights,
)

__all__ = ["CheckpointSaveError", "DetectionCheckpointer", "resolve_checkpoint_path"]

# buffers a model recomputes itself: not worth a warning when a checkpoint lacks them
_SILENTLY_MISSING = ("pixel_mean", "pixel_std")


class CheckpointSaveError(OSError):
    """A checkpoint could not be written; the previous one is intact. ``errno`` is the cause's."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _url_checkpoint(url: str) -> str:
    """A verified local copy of an ``http(s)`` URL, from the model zoo's download cache.

    A released checkpoint's URL is fetched as that model (its table sha256 applies); any other URL
    is cached under ``<cache>/urls/<host>/<path>`` so equal file names from different places never
    collide.
    """
    for name, entry in MODEL_ZOO.items():
        if entry.url == url:
            return str(get_checkpoint(name))
    parts = urlparse(url)
    folder = get_cache_dir() / "urls" / parts.netloc.replace(":", "_")
    folder = folder.joinpath(*[p for p in os.path.dirname(parts.path).split("/") if p])
    return str(cached_download(url, cache_dir=folder))


def _model_zoo_checkpoint(name: str) -> str:
    """The cached (downloaded and verified on first use) file of a released model name."""
    try:
        return str(get_checkpoint(name))
    except KeyError as e:
        raise FileNotFoundError(
            f"Checkpoint {name!r} is neither a file, a URL nor a released model name "
            f"({e.args[0] if e.args else 'unknown name'})"
        ) from None


def resolve_checkpoint_path(path: str) -> tuple[str, bool | None]:
    """A local, plausible checkpoint file for ``path`` (a file, an http(s) URL, a released model
    name or an iopath URL; downloads are cached and verified), and the ``matching_heuristics``
    asked for in a URL query (None when not given). Cheap enough to call before the model is
    built, so that a wrong path fails at once.

    Raises:
        FileNotFoundError: no such file or model name.
        NotACheckpointError: the file is not a checkpoint (empty, text, truncated archive...).
    """
    heuristics = None
    parsed = urlparse(path)
    query = parse_qs(parsed.query)
    if "matching_heuristics" in query:
        heuristics = query.pop("matching_heuristics")[0].lower() == "true"
        path = parsed._replace(query="&".join(f"{k}={v[0]}" for k, v in query.items())).geturl()
    if not os.path.isfile(path) and is_local_path(path) and not os.path.dirname(path):
        path = _model_zoo_checkpoint(path)
    elif urlparse(path).scheme in ("http", "https"):
        path = _url_checkpoint(path)
    if not os.path.isfile(path):
        local = PathManager.get_local_path(path) if not is_local_path(path) else path
        if not os.path.isfile(local):
            hint = " (it is a folder: name a .pth file in it)" if os.path.isdir(local) else ""
            raise FileNotFoundError(f"Checkpoint {path} not found{hint}")
        path = local
    check_checkpoint_file(path)
    return path, heuristics


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
        self.last_load: LoadReport | None = None
        self.resumed_from: str | None = None
        self._loading = ""

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
        try:
            if is_local_path(save_file):
                os.makedirs(self.save_dir, exist_ok=True)
                with atomic_write(save_file, "wb") as f:
                    torch.save(data, f)
            else:
                with self.path_manager.open(save_file, "wb") as f:
                    torch.save(data, f)
        except OSError as e:
            raise self._save_error(save_file, e) from e
        except RuntimeError as e:  # torch's zip writer reports a failed write as RuntimeError
            cause = e.__context__ if isinstance(e.__context__, OSError) else None
            if cause is None and "file write failed" not in str(e):
                raise
            raise self._save_error(save_file, cause or OSError(str(e))) from e
        self.tag_last_checkpoint(basename)

    def _save_error(self, save_file: str, error: OSError) -> CheckpointSaveError:
        previous = self.get_checkpoint_file() if self.has_checkpoint() else ""
        kept = (
            f"The previous checkpoint {previous} is intact and last_checkpoint still names it"
            if previous and os.path.isfile(previous)
            else "No earlier checkpoint exists"
        )
        reason = error.strerror or str(error)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            try:
                free = shutil.disk_usage(self.save_dir).free / 2**20
                reason += f" ({free:.0f} MiB free in {self.save_dir})"
            except OSError:
                pass
            fix = (
                "free disk space (fewer checkpoints: train.checkpointer.max_to_keep) and continue "
                "with --resume"
            )
        else:
            fix = "fix the cause and continue with --resume"
        return CheckpointSaveError(
            error.errno, f"Could not write checkpoint {save_file}: {reason}. {kept}; {fix}."
        )

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
    def resume_or_load(self, path: str, *, resume: bool = True) -> dict[str, Any]:
        """With ``resume``, continue from the checkpoint ``last_checkpoint`` names (or the newest
        intact one, see the module docstring; ``self.resumed_from`` says which), restoring every
        checkpointable. Otherwise (or with nothing to resume) load only the model from ``path``.
        """
        self.resumed_from = None
        if resume:
            candidates, problem = resume_candidates(self.save_dir)
            failures = [problem] if problem else []
            for candidate in candidates:
                try:
                    checkpoint = self.load(candidate)
                except NotACheckpointError as e:
                    failures.append(str(e).split(". Check the path")[0])
                    continue
                if failures:
                    self.logger.warning(
                        f"--resume: {'; '.join(failures)}. Resuming from {candidate}, the newest "
                        "intact checkpoint, instead."
                    )
                self.resumed_from = candidate
                return checkpoint
            if failures:
                raise ResumeError(
                    f"--resume found no intact checkpoint in {self.save_dir}: "
                    f"{'; '.join(failures)}. Files there: {describe_checkpoints(self.save_dir)}. "
                    "Start a new run without --resume (in another train.output_dir to keep these "
                    "files), or put a good checkpoint there and write its name into "
                    "last_checkpoint."
                )
        return self.load(path, checkpointables=[])

    def load(self, path: str, checkpointables: list[str] | None = None) -> dict[str, Any]:
        """Load a checkpoint (see the module docstring for sources and formats).

        Args:
            path: file path or URL; empty means "nothing to load".
            checkpointables: names to restore besides the model; None restores all present.

        Returns:
            The checkpoint entries not consumed (e.g. ``iteration``).
        """
        self._matching_heuristics = False
        self.last_load = None
        if path:
            path = self._prepare_path(path)
        self._loading = path
        return super().load(path, checkpointables=checkpointables)

    def _prepare_path(self, path: str) -> str:
        """Resolve a URL (honouring ``?matching_heuristics=``) to a local file that every rank can
        read."""
        path, heuristics = resolve_checkpoint_path(path)
        if heuristics is not None:
            self._matching_heuristics = heuristics
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
            check_state_dict(filename, data["model"])
            self.logger.info(f"Reading a weight file from '{data['__author__']}'")
            self._matching_heuristics |= bool(data.get("matching_heuristics", False))
            return {"model": data["model"], **{k: v for k, v in data.items() if k != "model"}}
        data = load_torch_weights(filename)
        if not isinstance(data, dict):
            raise NotACheckpointError(
                f"{filename} is not a checkpoint (it holds a {type(data).__name__}, not a state "
                "dict or a dict with a 'model' entry)"
            )
        if "model" not in data:
            data = {"model": data}
        check_state_dict(filename, data["model"])
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
        recomputed = [k for k in buffers if k in _SILENTLY_MISSING]
        self.last_load = LoadReport(
            self._loading,
            len(self.model.state_dict()),
            _filter_reused_missing_keys(self.model, list(incompatible.missing_keys)),
            incompatible.incorrect_shapes,
            incompatible.unexpected_keys,
            recomputed,
        )
        missing = [k for k in incompatible.missing_keys if k not in recomputed]
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
