"""Verifying downloaded and cached files: sha256 digests (hashed on every use, the result kept
per process for an unchanged file), the ``<file>.sha256`` records next to them, and a check that
a zip archive (PyTorch's checkpoint format) is complete.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from pathlib import Path

__all__ = [
    "archive_problem",
    "file_sha256",
    "read_recorded_sha256",
    "sidecar_path",
    "write_recorded_sha256",
]

_CHUNK_BYTES = 1 << 20
_ZIP_MAGIC = b"PK\x03\x04"
# path -> ((size, mtime_ns, inode), digest): a file is hashed once per process while unchanged
_DIGESTS: dict[str, tuple[tuple[int, int, int], str]] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks. The digest is reused within this process
    while the file's size, modification time and inode are unchanged."""
    path = os.path.abspath(path)
    stat = os.stat(path)
    key = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    known = _DIGESTS.get(path)
    if known is not None and known[0] == key:
        return known[1]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    _DIGESTS[path] = (key, digest.hexdigest())
    return digest.hexdigest()


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_recorded_sha256(path: Path) -> str | None:
    """The digest recorded in ``<path>.sha256`` (``sha256sum`` format), or None without one."""
    try:
        text = sidecar_path(Path(path)).read_text().split()
    except (OSError, UnicodeDecodeError):
        return None
    return text[0].lower() if text and re.fullmatch(r"[0-9a-fA-F]{64}", text[0]) else None


def write_recorded_sha256(path: Path, digest: str) -> bool:
    """Record ``digest`` for ``path``; False when the folder is not writable (a read-only cache)."""
    record = sidecar_path(Path(path))
    tmp = record.with_name(record.name + ".tmp")
    try:
        tmp.write_text(f"{digest}  {Path(path).name}\n")
        os.replace(tmp, record)
    except OSError:
        return False
    return True


def archive_problem(path: str | os.PathLike) -> str | None:
    """Why a file that starts like a zip archive is not a complete one (a truncated download
    lacks the directory at its end), or None. Other files are not judged."""
    with open(path, "rb") as f:
        if f.read(4) != _ZIP_MAGIC:
            return None
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        size = os.path.getsize(path)
        return f"a truncated or damaged zip archive of {size} bytes ({e})"
    return None
