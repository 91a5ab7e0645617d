"""Cached, verified, resumable downloads of checkpoint files.

Where files go
    ``$DETREX_CACHE/checkpoints/<file name>``; ``DETREX_CACHE`` defaults to ``~/.cache/detrex_ext``.
    Next to each file, ``<file name>.sha256`` records its digest in ``sha256sum`` format (so
    ``sha256sum -c`` can check it by hand).

How a download proceeds
    1. Under a file lock (``<file>.lock``; several processes of one job may ask at once), a cached
       file is used when its digest matches the expected one (or, when none is known, when it has a
       recorded digest; a file placed by hand is hashed and its digest recorded).
    2. Otherwise the bytes go to ``<file>.part``. A broken transfer is retried, resuming with an
       HTTP ``Range`` request (guarded by ``If-Range``) when the server supports it and starting
       again from zero when it does not. A ``.part`` left by an earlier run is resumed too.
    3. The complete ``.part`` is checked against the expected sha256 and only then renamed over the
       cache file. A mismatch keeps the download aside as ``<file>.sha256-mismatch``, never touches
       a cached file, and raises :class:`ChecksumMismatchError` saying what happened.

Offline mode (``DETREX_OFFLINE=1``) never touches the network: it uses the cache or raises
:class:`OfflineCacheMissError` that names the URL to fetch and the exact path to place it at.

Only ``http(s)://`` URLs and local paths are accepted. Downloaded files are only ever read as data;
checkpoints are then loaded with ``torch.load(..., weights_only=True)`` by the checkpointer.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_ENV = "DETREX_CACHE"
OFFLINE_ENV = "DETREX_OFFLINE"
DEFAULT_CACHE_DIR = Path("~/.cache/detrex_ext")
_CHUNK_BYTES = 1 << 20
_USER_AGENT = "detrex_ext-model-zoo"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(RuntimeError):
    """The file could not be fetched; the message says what to try."""


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


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


# ----------------------------------------------------------------------------- sidecar records


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_recorded_sha256(path: Path) -> str | None:
    """The digest recorded for ``path``, or None when there is no record or it is older than the file."""
    record = sidecar_path(path)
    try:
        if record.stat().st_mtime_ns < path.stat().st_mtime_ns:
            return None  # the file was replaced after the record was written
        text = record.read_text().split()
    except (OSError, UnicodeDecodeError):
        return None
    return text[0].lower() if text and re.fullmatch(r"[0-9a-fA-F]{64}", text[0]) else None


def write_recorded_sha256(path: Path, digest: str) -> None:
    record = sidecar_path(path)
    tmp = record.with_name(record.name + ".tmp")
    tmp.write_text(f"{digest}  {path.name}\n")
    os.replace(tmp, record)


def verified_digest(path: Path) -> str:
    """The file's sha256: the recorded one when it is current, else computed now and recorded."""
    digest = read_recorded_sha256(path)
    if digest is None:
        digest = file_sha256(path)
        write_recorded_sha256(path, digest)
    return digest


# ----------------------------------------------------------------------------- transfers


@dataclass
class _PartialState:
    """What we know about a ``.part`` file, stored as JSON next to it so a later run can resume."""

    url: str
    total: int | None = None
    validator: str | None = None  # ETag, else Last-Modified: sent as If-Range when resuming

    @classmethod
    def load(cls, path: Path, url: str) -> _PartialState | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if data.get("url") != url:
            return None
        return cls(url=url, total=data.get("total"), validator=data.get("validator"))

    def save(self, path: Path) -> None:
        path.write_text(
            json.dumps({"url": self.url, "total": self.total, "validator": self.validator})
        )


class _TransientError(Exception):
    """A transfer that broke off and may succeed when retried."""


def _open(url: str, start: int, validator: str | None, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if start > 0:
        request.add_header("Range", f"bytes={start}-")
        if validator:
            request.add_header("If-Range", validator)
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (scheme checked)


def _transfer_once(
    url: str, part: Path, state_file: Path, timeout: float, progress: bool, desc: str
) -> None:
    """Fetch the rest of ``url`` into ``part``; returns when the file is complete."""
    from tqdm.auto import tqdm

    state = _PartialState.load(state_file, url) if part.exists() else None
    start = part.stat().st_size if state is not None else 0
    if state is not None and state.total is not None and start == state.total:
        return  # a complete transfer whose rename was interrupted
    try:
        response = _open(url, start, state.validator if state else None, timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and start > 0:  # our partial file does not fit the remote one
            logger.info("server refused to resume %s (HTTP 416); starting again", desc)
            part.unlink(missing_ok=True)
            raise _TransientError("range not satisfiable") from error
        raise
    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length is not None else None
        if response.status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            if match is None or int(match.group(1)) != start:
                part.unlink(missing_ok=True)
                raise _TransientError("server answered the range request with the wrong range")
            total = int(match.group(3)) if match.group(3) != "*" else None
            if state and state.total and total and state.total != total:
                part.unlink(missing_ok=True)
                raise _TransientError("remote file changed size since the partial download")
            mode = "ab"
            logger.info("resuming %s at byte %d", desc, start)
        else:
            if start > 0:
                logger.info("server does not resume %s; downloading it again from the start", desc)
            start, total, mode = 0, length, "wb"
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        _PartialState(url=url, total=total, validator=validator).save(state_file)

        received = start
        with (
            open(part, mode) as f,
            tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc,
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            try:
                while chunk := response.read(_CHUNK_BYTES):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (http.client.IncompleteRead, ConnectionError, socket.timeout) as error:
                raise _TransientError(f"connection broke after {received} bytes") from error
    if total is not None and received != total:
        raise _TransientError(f"connection closed after {received} of {total} bytes")


def _fetch_to_part(
    url: str,
    part: Path,
    *,
    timeout: float,
    max_attempts: int,
    retry_wait_s: float,
    progress: bool,
    destination: Path,
) -> None:
    """Retry :func:`_transfer_once` until ``part`` holds the whole file."""
    state_file = part.with_name(part.name + ".json")
    for attempt in range(1, max_attempts + 1):
        try:
            _transfer_once(url, part, state_file, timeout, progress, destination.name)
            state_file.unlink(missing_ok=True)
            return
        except _TransientError as error:
            reason = str(error)
        except urllib.error.HTTPError as error:
            if error.code < 500:
                raise DownloadError(
                    f"cannot download {url}: HTTP {error.code} {error.reason}. If the file moved, "
                    f"download it yourself and place it at {destination}"
                ) from error
            reason = f"HTTP {error.code} {error.reason}"
        except (urllib.error.URLError, ConnectionError, socket.timeout, OSError) as error:
            reason = f"{type(error).__name__}: {error}"
            if isinstance(getattr(error, "reason", None), socket.gaierror):
                break  # the host name does not resolve (offline?): retrying will not help
        if attempt < max_attempts:
            logger.warning(
                "download of %s interrupted (%s); retry %d/%d",
                url,
                reason,
                attempt,
                max_attempts - 1,
            )
            time.sleep(retry_wait_s * attempt)
    kept = (
        f"; the partial file {part} is kept and the next call resumes it" if part.exists() else ""
    )
    raise DownloadError(
        f"cannot download {url} after {attempt} attempt(s) ({reason}){kept}. Without network "
        f"access, download it elsewhere and place it at {destination} (or set {OFFLINE_ENV}=1 "
        "to use only the cache)"
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
    import portalocker

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

    with portalocker.Lock(str(destination) + ".lock", timeout=24 * 3600):
        if destination.exists():
            digest = verified_digest(destination)
            if expected is None or digest == expected:
                logger.info("using cached %s", destination)
                return destination
            message = (
                f"the cached file {destination} has sha256 {digest} but {expected} is expected "
                "(it was replaced or is damaged)"
            )
            if offline:
                raise ChecksumMismatchError(
                    f"{message}. Offline mode is on ({OFFLINE_ENV}=1), so it cannot be fetched "
                    f"again: replace it with a good copy of {url}"
                )
            logger.warning(
                "%s; downloading it again (it is replaced only if the new copy verifies)", message
            )
        elif offline:
            digest_hint = f" (sha256 {expected})" if expected else ""
            raise OfflineCacheMissError(
                f"offline mode is on ({OFFLINE_ENV}=1) and {filename} is not in the cache. Download "
                f"{url}{digest_hint} on a machine with network access and place it at "
                f"{destination} (or unset {OFFLINE_ENV})"
            )

        part = destination.with_name(destination.name + ".part")
        _fetch_to_part(
            url,
            part,
            timeout=timeout,
            max_attempts=max_attempts,
            retry_wait_s=retry_wait_s,
            progress=progress,
            destination=destination,
        )
        digest = file_sha256(part)
        if expected is not None and digest != expected:
            rejected = destination.with_name(destination.name + ".sha256-mismatch")
            os.replace(part, rejected)
            kept = (
                f"The cached file {destination} was left as it was."
                if destination.exists()
                else "Nothing was written to the cache."
            )
            raise ChecksumMismatchError(
                f"sha256 mismatch for {url}: expected {expected}, got {digest}. The download is "
                f"kept at {rejected} for inspection. {kept} The file on the server may have "
                "changed, or the transfer was corrupted: try again, or report it."
            )
        os.replace(part, destination)
        write_recorded_sha256(destination, digest)
        logger.info("downloaded %s (sha256 %s)", destination, digest)
        return destination


def resolve_local_file(path: str | os.PathLike, sha256: str | None = None) -> Path:
    """Check a local checkpoint path (exists, and matches ``sha256`` when given)."""
    local = Path(path).expanduser()
    if not local.is_file():
        raise FileNotFoundError(f"checkpoint file {local} does not exist")
    if sha256 is not None:
        digest = file_sha256(local)
        if digest != sha256.lower():
            raise ChecksumMismatchError(
                f"{local} has sha256 {digest} but {sha256.lower()} is expected"
            )
    return local
