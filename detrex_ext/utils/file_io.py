"""Project ``PathManager`` (iopath) and crash-safe file writes.

``PathManager`` resolves local paths, ``http(s)://`` URLs (downloaded once into the iopath cache:
``$FVCORE_CACHE`` or ``~/.torch/iopath_cache``) and ``detectron2://`` paths (detectron2's public
file server), like detectron2's own ``PathManager``.

``atomic_write`` writes a file so that readers see either the old content or the complete new
content, never a truncated file: data go to a temporary file in the same directory, are flushed
and fsync'ed, and the temporary file is renamed over the destination with ``os.replace``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import IO

from iopath.common.file_io import HTTPURLHandler, OneDrivePathHandler, PathHandler
from iopath.common.file_io import PathManager as _PathManagerClass

__all__ = ["PathManager", "Detectron2Handler", "atomic_write", "is_local_path"]


class Detectron2Handler(PathHandler):
    """Resolve ``detectron2://X`` to ``https://dl.fbaipublicfiles.com/detectron2/X``."""

    PREFIX = "detectron2://"
    S3_DETECTRON2_PREFIX = "https://dl.fbaipublicfiles.com/detectron2/"

    def _get_supported_prefixes(self) -> list[str]:
        return [self.PREFIX]

    def _get_local_path(self, path: str, **kwargs) -> str:
        name = path[len(self.PREFIX) :]
        return PathManager.get_local_path(self.S3_DETECTRON2_PREFIX + name, **kwargs)

    def _open(self, path: str, mode: str = "r", **kwargs):
        return PathManager.open(self._get_local_path(path), mode, **kwargs)


PathManager = _PathManagerClass()
PathManager.register_handler(HTTPURLHandler())
PathManager.register_handler(OneDrivePathHandler())
PathManager.register_handler(Detectron2Handler())


def is_local_path(path: str) -> bool:
    """True for plain filesystem paths (no ``scheme://`` prefix)."""
    return "://" not in path


def _fsync_directory(directory: str) -> None:
    """Persist a rename on POSIX filesystems (a directory fd cannot be opened on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb") -> Iterator[IO]:
    """Open ``path`` for writing such that it is replaced atomically when the block succeeds.

    The temporary file ``.<name>.tmp.<pid>.<random>`` lives next to ``path`` (same filesystem, so
    the rename is atomic). If the block raises, the temporary file is removed and ``path`` is left
    untouched; if the process dies, only the hidden temporary file remains.

    Args:
        path: local destination file.
        mode: ``"wb"`` or ``"w"``.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write supports modes 'wb' and 'w', got {mode!r}")
    directory = os.path.dirname(os.path.abspath(path))
    tmp_path = os.path.join(
        directory, f".{os.path.basename(path)}.tmp.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    )
    # os.open with 0o666 honours the umask, unlike tempfile.mkstemp's fixed 0o600
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
        raise
    _fsync_directory(directory)
