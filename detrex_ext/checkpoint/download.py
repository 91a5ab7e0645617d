"""Cached, verified, resumable downloads of checkpoint files.

Where files go
    ``$DETREX_CACHE/checkpoints/<file name>``; ``DETREX_CACHE`` defaults to ``~/.cache/detrex_ext``.
    Next to each file, ``<file name>.sha256`` records its digest in ``sha256sum`` format (so
    ``sha256sum -c`` can check it by hand).

How a download proceeds
    1. Under a file lock (``<file>.lock``; several processes of one job may ask at once), a cached
       file is hashed (every time it is used; once per process while the file is unchanged) and
       used when its digest matches the expected one, or, when none is known, the digest recorded
       at its download (a file placed by hand has no record: its digest is recorded now). A cache
       that is read-only is used without the lock when it holds a verified file.
    2. Otherwise the bytes go to ``<file>.part``. A broken transfer is retried, resuming with an
       HTTP ``Range`` request (guarded by ``If-Range``) when the server supports it and starting
       again from zero when it does not. A ``.part`` left by an earlier run is resumed too.
    3. The complete ``.part`` is checked against the expected sha256 (and, when it is a zip archive
       such as a PyTorch checkpoint, checked to be complete) and only then renamed over the
       cache file. A mismatch keeps the download aside as ``<file>.sha256-mismatch``, never touches
       a cached file, and raises :class:`ChecksumMismatchError` saying what happened.

Offline mode (``DETREX_OFFLINE=1``) never touches the network: it uses the cache or raises
:class:`OfflineCacheMissError` that names the URL to fetch and the exact path to place it at.

Only ``http(s)://`` URLs and local paths are accepted. Downloaded files are only ever read as data;
checkpoints are then loaded with ``torch.load(..., weights_only=True)`` by the checkpointer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from .transfer import OFFLINE_ENV, DownloadError, fetch_to_part
from .verification import (
    archive_problem,
    file_sha256,
    read_recorded_sha256,
    sidecar_path,
    write_recorded_sha256,
)

__all__ = [
    "ChecksumMismatchError",
    "DownloadError",
    "OfflineCacheMissError",
    "cached_download",
    "file_sha256",
    "get_cache_dir",
    "is_offline",
    "is_url",
    "read_recorded_sha256",
    "resolve_local_file",
    "sidecar_path",
]

logger = logging.getLogger(__name__)

CACHE_ENV = "DETREX_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/detrex_ext")


class ChecksumMismatchError(DownloadError):
    """A downloaded or cached file does not have the expected sha256."""


class OfflineCacheMissError(FileNotFoundError):
    """Offline mode is on and the file is not in the cache."""


def get_cache_dir() -> Path:
    """Root of the download cache: ``$DETREX_CACHE`` or ``~/.cache/detrex_ext``."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


def is_offline() -> bool:
    """True when ``DETREX_OFFLINE`` is set to 1/true/yes/on."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def is_url(path: str) -> bool:
    """True for anything with a URL scheme (``http://...``); False for local paths."""
    scheme = urllib.parse.urlsplit(str(path)).scheme
    return len(scheme) > 1  # "C:" on Windows is a drive letter, not a scheme


def check_url_scheme(url: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(
            f"unsupported URL scheme {scheme!r} in {url!r}: only http(s) URLs and local file paths "
            "are accepted (download the file yourself and pass its path)"
        )


# ----------------------------------------------------------------------------- public entry point


def cached_download(
    url: str,
    filename: str | None = None,
    *,
    sha256: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    max_attempts: int = 4,
    retry_wait_s: float = 1.0,
) -> Path:
    """Return a verified local copy of ``url``, downloading it into the cache if needed.

    Args:
        url: an ``http(s)://`` URL.
        filename: cache file name; defaults to the last component of the URL path.
        sha256: expected hex digest; when None the digest of the first download is recorded and
            later uses are checked against that record.
        cache_dir: directory for the file; defaults to ``get_cache_dir() / "checkpoints"``.
        offline: never use the network; defaults to ``is_offline()``.
        progress: show a tqdm progress bar.
        timeout: seconds to wait for the server on each read.
        max_attempts: transfers tried before giving up (each later one resumes the earlier).
        retry_wait_s: pause before the n-th retry is ``n * retry_wait_s`` seconds.

    Raises:
        OfflineCacheMissError: offline and the file is not cached (the message names the path).
        ChecksumMismatchError: the downloaded (or cached, when offline) file has the wrong sha256.
        DownloadError: the transfer failed; a partial file is kept for the next call to resume.
    """
    check_url_scheme(url)
    filename = filename or Path(urllib.parse.urlsplit(url).path).name
    if not filename:
        raise ValueError(f"cannot derive a file name from {url!r}; pass filename=")
    directory = Path(cache_dir).expanduser() if cache_dir else get_cache_dir() / "checkpoints"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(
            f"cannot create the cache directory {directory} ({error}); set {CACHE_ENV} to a "
            "writable directory"
        ) from error
    destination = directory / filename
    expected = sha256.lower() if sha256 else None
    offline = is_offline() if offline is None else offline

    with _cache_lock(destination):
        if destination.exists():
            problem = _cached_file_problem(destination, expected)
            if problem is None:
                logger.info("using cached %s", destination)
                return destination
            if offline:
                raise ChecksumMismatchError(
                    f"{problem}. Offline mode is on ({OFFLINE_ENV}=1), so it cannot be fetched "
                    f"again: replace it with a good copy of {url}"
                )
            logger.warning(
                "%s; downloading it again (it is replaced only if the new copy verifies)", problem
            )
        elif offline:
            digest_hint = f" (sha256 {expected})" if expected else ""
            raise OfflineCacheMissError(
                f"offline mode is on ({OFFLINE_ENV}=1) and {filename} is not in the cache. Download "
                f"{url}{digest_hint} on a machine with network access and place it at "
                f"{destination} (or unset {OFFLINE_ENV})"
            )

        part = destination.with_name(destination.name + ".part")
        fetch_to_part(
            url,
            part,
            timeout=timeout,
            max_attempts=max_attempts,
            retry_wait_s=retry_wait_s,
            progress=progress,
            destination=destination,
        )
        digest = file_sha256(part)
        damage = archive_problem(part)
        if (expected is not None and digest != expected) or damage:
            rejected = destination.with_name(destination.name + ".sha256-mismatch")
            os.replace(part, rejected)
            kept = (
                f"The cached file {destination} was left as it was."
                if destination.exists()
                else "Nothing was written to the cache."
            )
            what = f"the download is {damage}" if damage else f"expected {expected}, got {digest}"
            raise ChecksumMismatchError(
                f"{'damaged download' if damage else 'sha256 mismatch'} of {url}: {what}. The "
                f"download is kept at {rejected} for inspection. {kept} The file on the server "
                "may have changed or be truncated, or the transfer was corrupted: try again, or "
                "report it."
            )
        os.replace(part, destination)
        write_recorded_sha256(destination, digest)
        logger.info("downloaded %s (sha256 %s)", destination, digest)
        return destination


@contextlib.contextmanager
def _cache_lock(destination: Path) -> Iterator[None]:
    """Hold the download lock of ``destination``; in a read-only cache that holds the file, go
    without it (nothing is written there)."""
    import portalocker

    if destination.exists() and not os.access(destination.parent, os.W_OK):
        yield
        return
    lock = portalocker.Lock(str(destination) + ".lock", timeout=24 * 3600)
    try:
        lock.acquire()
    except (OSError, portalocker.exceptions.LockException) as error:
        raise DownloadError(
            f"cannot write to the cache directory {destination.parent} ({error}) and it does not "
            f"hold {destination.name}; set {CACHE_ENV} to a writable directory, or place the file "
            "there"
        ) from error
    try:
        yield
    finally:
        lock.release()


def _cached_file_problem(destination: Path, expected: str | None) -> str | None:
    """None when the cached file verifies (see the module docstring), else what is wrong."""
    digest = file_sha256(destination)
    recorded = read_recorded_sha256(destination)
    reference = expected or recorded
    if reference is None:  # placed by hand: trusted now, and checked against this from now on
        if not write_recorded_sha256(destination, digest):
            logger.info("%s has no sha256 record and the cache is read-only", destination)
        return None
    if digest == reference:
        if recorded != digest:
            write_recorded_sha256(destination, digest)
        return None
    source = "expected" if expected else f"recorded at its download in {sidecar_path(destination)}"
    return (
        f"the cached file {destination} has sha256 {digest} but {reference} is {source} (it was "
        "replaced or is damaged)"
    )


def resolve_local_file(path: str | os.PathLike, sha256: str | None = None) -> Path:
    """A local checkpoint file (e.g. in a ``DETREX_ZOO_MIRROR`` folder), checked on every use: a
    zip archive must be complete, and the sha256 must equal ``sha256``, else the record next to
    the file (``<file>.sha256``), else the digest recorded in the cache at its first use.

    Raises:
        FileNotFoundError: no such file.
        ChecksumMismatchError: the file is truncated, or its digest differs (named in the message).
    """
    local = Path(path).expanduser()
    if not local.is_file():
        raise FileNotFoundError(f"checkpoint file {local} does not exist")
    damage = archive_problem(local)
    if damage:
        raise ChecksumMismatchError(f"{local} is {damage}: copy the file again")
    digest = file_sha256(local)
    record = get_cache_dir() / "local_records" / local.name
    reference, source = sha256, "expected"
    if reference is None and read_recorded_sha256(local):
        reference, source = read_recorded_sha256(local), f"recorded in {sidecar_path(local)}"
    if reference is None and read_recorded_sha256(record):
        reference, source = read_recorded_sha256(record), f"recorded at its first use in {record}"
    if reference is None:
        with contextlib.suppress(OSError):
            record.parent.mkdir(parents=True, exist_ok=True)
        write_recorded_sha256(record, digest)
        return local
    if digest != reference.lower():
        raise ChecksumMismatchError(
            f"{local} has sha256 {digest} but {reference.lower()} is {source}: it was replaced "
            "or is damaged; copy a good file there (or delete the record to accept this one)"
        )
    return local
