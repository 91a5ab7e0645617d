"""HTTP transfers into a ``.part`` file: resumed with ``Range``/``If-Range`` after a broken
connection (or by a later run), restarted when the server cannot resume, retried with waits."""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["fetch_to_part"]

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 20
_USER_AGENT = "detrex_ext-model-zoo"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
OFFLINE_ENV = "DETREX_OFFLINE"


class DownloadError(RuntimeError):
    """The file could not be fetched; the message says what to try."""


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


def fetch_to_part(
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
