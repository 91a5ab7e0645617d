"""A small HTTP file server on 127.0.0.1 for download tests, with knobs for range support and
broken transfers, and a log of the requests it answered."""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class FileServer:
    files: dict[str, bytes] = field(default_factory=dict)
    support_range: bool = True
    break_after_bytes: int | None = None  # body bytes sent before the connection is cut ...
    breaks_left: int = 0  # ... on this many of the next responses
    requests: list[dict] = field(default_factory=list)
    bytes_sent: int = 0
    port: int = 0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


def _make_handler(server: FileServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            name = self.path.lstrip("/")
            server.requests.append(
                {
                    "path": name,
                    "range": self.headers.get("Range"),
                    "if_range": self.headers.get("If-Range"),
                }
            )
            data = server.files.get(name)
            if data is None:
                self.send_error(404, "no such file")
                return
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if_range = self.headers.get("If-Range")
            if server.support_range and match and (if_range is None or if_range == _etag(data)):
                start = int(match.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", _etag(data))
            if server.support_range:
                self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if server.breaks_left > 0 and server.break_after_bytes is not None:
                server.breaks_left -= 1
                body = body[: server.break_after_bytes]
                self.close_connection = True
            self.wfile.write(body)
            self.wfile.flush()
            server.bytes_sent += len(body)

    return Handler


@pytest.fixture()
def file_server():
    """A running :class:`FileServer`; tests put bytes into ``files`` and set the knobs."""
    state = FileServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture()
def zoo_env(tmp_path, monkeypatch):
    """An empty cache directory in DETREX_CACHE and no offline mode or mirror from the caller."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DETREX_CACHE", str(cache))
    monkeypatch.delenv("DETREX_OFFLINE", raising=False)
    monkeypatch.delenv("DETREX_ZOO_MIRROR", raising=False)
    return cache
