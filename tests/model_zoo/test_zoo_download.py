"""cached_download against a local HTTP server: success, resume, restart, checksum, offline."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from detrex_ext.checkpoint.download import (
    ChecksumMismatchError,
    DownloadError,
    OfflineCacheMissError,
    cached_download,
    get_cache_dir,
)

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
NAME = "model.pth"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download(server, **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("retry_wait_s", 0.0)
    return cached_download(server.url(NAME), **kwargs)


def test_download_caches_and_records_sha256(file_server, zoo_env):
    file_server.files[NAME] = PAYLOAD
    path = _download(file_server)
    assert path == zoo_env / "checkpoints" / NAME
    assert path.read_bytes() == PAYLOAD
    # the digest is recorded in sha256sum format next to the file
    assert (
        zoo_env / "checkpoints" / (NAME + ".sha256")
    ).read_text() == f"{_sha(PAYLOAD)}  {NAME}\n"
    assert not (zoo_env / "checkpoints" / (NAME + ".part")).exists()
    # the second call is served from the cache
    assert _download(file_server) == path
    assert len(file_server.requests) == 1


def test_cache_dir_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("DETREX_CACHE", str(tmp_path / "x"))
    assert get_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("DETREX_CACHE")
    assert str(get_cache_dir()) == os.path.expanduser("~/.cache/detrex_ext")


def test_known_sha256_is_accepted(file_server, zoo_env):
    file_server.files[NAME] = PAYLOAD
    path = _download(file_server, sha256=_sha(PAYLOAD).upper())
    assert path.read_bytes() == PAYLOAD


def test_broken_transfer_resumes_with_range_request(file_server, zoo_env):
    file_server.files[NAME] = PAYLOAD
    file_server.break_after_bytes = 300_000
    file_server.breaks_left = 2
    path = _download(file_server, sha256=_sha(PAYLOAD), max_attempts=3)
    assert path.read_bytes() == PAYLOAD
    ranges = [r["range"] for r in file_server.requests]
    assert ranges == [None, "bytes=300000-", "bytes=600000-"]
    assert all(r["if_range"] for r in file_server.requests[1:])  # guarded by the ETag
    assert file_server.bytes_sent == len(PAYLOAD)  # nothing was fetched twice


def test_partial_file_from_an_earlier_run_is_resumed(file_server, zoo_env):
    file_server.files[NAME] = PAYLOAD
    file_server.break_after_bytes = 400_000
    file_server.breaks_left = 1
    with pytest.raises(DownloadError, match="partial file .* is kept"):
        _download(file_server, max_attempts=1)
    part = zoo_env / "checkpoints" / (NAME + ".part")
    assert part.stat().st_size == 400_000
    assert not (zoo_env / "checkpoints" / NAME).exists()

    path = _download(file_server)
    assert path.read_bytes() == PAYLOAD
    assert file_server.requests[-1]["range"] == "bytes=400000-"
    assert not part.exists()


def test_server_without_range_support_restarts_cleanly(file_server, zoo_env):
    file_server.files[NAME] = PAYLOAD
    file_server.support_range = False
    file_server.break_after_bytes = 500_000
    file_server.breaks_left = 1
    path = _download(file_server, sha256=_sha(PAYLOAD), max_attempts=2)
    assert path.read_bytes() == PAYLOAD  # not the 500 kB twice, not appended
    assert file_server.requests[1]["range"] == "bytes=500000-"  # asked, and got a full 200


def test_changed_remote_file_restarts_instead_of_splicing(file_server, zoo_env):
    file_server.files[NAME] = PAYLOAD
    file_server.break_after_bytes = 200_000
    file_server.breaks_left = 1
    with pytest.raises(DownloadError):
        _download(file_server, max_attempts=1)
    new_payload = PAYLOAD[::-1]
    file_server.files[NAME] = new_payload  # new ETag: If-Range makes the server send it whole
    path = _download(file_server)
    assert path.read_bytes() == new_payload


def test_checksum_mismatch_keeps_download_aside_and_raises(file_server, zoo_env):
    file_server.files[NAME] = PAYLOAD
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatchError) as info:
        _download(file_server, sha256=wrong)
    message = str(info.value)
    assert wrong in message and _sha(PAYLOAD) in message
    assert "Nothing was written to the cache" in message
    directory = zoo_env / "checkpoints"
    assert not (directory / NAME).exists()
    assert (directory / (NAME + ".sha256-mismatch")).read_bytes() == PAYLOAD


def test_checksum_mismatch_never_touches_the_cached_file(file_server, zoo_env):
    file_server.files[NAME] = PAYLOAD
    path = _download(file_server)  # cached, digest recorded
    # The table now expects another file, and the server serves something else again.
    file_server.files[NAME] = b"tampered" * 1000
    with pytest.raises(ChecksumMismatchError, match="was left as it was"):
        _download(file_server, sha256=_sha(b"the real thing"))
    assert path.read_bytes() == PAYLOAD
    assert (zoo_env / "checkpoints" / (NAME + ".sha256")).read_text().startswith(_sha(PAYLOAD))


def test_damaged_cache_file_is_replaced_by_a_verified_download(file_server, zoo_env):
    file_server.files[NAME] = PAYLOAD
    path = _download(file_server, sha256=_sha(PAYLOAD))
    path.write_bytes(b"damaged")  # newer than the sha256 record, so it is hashed again
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    assert _download(file_server, sha256=_sha(PAYLOAD)).read_bytes() == PAYLOAD
    assert len(file_server.requests) == 2


def test_offline_hit_uses_the_cache_without_network(file_server, zoo_env, monkeypatch):
    file_server.files[NAME] = PAYLOAD
    path = _download(file_server)
    monkeypatch.setenv("DETREX_OFFLINE", "1")
    assert _download(file_server, sha256=_sha(PAYLOAD)) == path
    assert len(file_server.requests) == 1


def test_offline_miss_says_which_file_to_place_where(file_server, zoo_env, monkeypatch):
    file_server.files[NAME] = PAYLOAD
    monkeypatch.setenv("DETREX_OFFLINE", "1")
    with pytest.raises(OfflineCacheMissError) as info:
        _download(file_server, sha256=_sha(PAYLOAD))
    destination = zoo_env / "checkpoints" / NAME
    assert str(destination) in str(info.value)
    assert file_server.url(NAME) in str(info.value)
    assert file_server.requests == []
    # following the instructions works, and the placed file's digest is recorded
    destination.write_bytes(PAYLOAD)
    assert _download(file_server, sha256=_sha(PAYLOAD)) == destination
    assert (zoo_env / "checkpoints" / (NAME + ".sha256")).read_text().startswith(_sha(PAYLOAD))


def test_offline_with_a_wrong_placed_file_reports_the_mismatch(file_server, zoo_env):
    destination = zoo_env / "checkpoints" / NAME
    destination.parent.mkdir(parents=True)
    destination.write_bytes(b"not it")
    with pytest.raises(ChecksumMismatchError, match="replace it with a good copy"):
        _download(file_server, sha256=_sha(PAYLOAD), offline=True)
    assert destination.read_bytes() == b"not it"


def test_missing_file_fails_at_once_with_placement_hint(file_server, zoo_env):
    with pytest.raises(DownloadError, match="HTTP 404.*place it at"):
        _download(file_server, max_attempts=3)
    assert len(file_server.requests) == 1  # a 404 is not retried


@pytest.mark.parametrize("url", ["ftp://example.com/a.pth", "s3://bucket/a.pth", "file:///a.pth"])
def test_only_http_urls_are_downloaded(url, zoo_env):
    with pytest.raises(ValueError, match="only http"):
        cached_download(url)


def test_unwritable_cache_names_the_variable_to_set(file_server, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should go")
    monkeypatch.setenv("DETREX_CACHE", str(blocker))
    with pytest.raises(DownloadError, match="set DETREX_CACHE to a writable directory"):
        _download(file_server)


def test_unresolvable_host_fails_at_once(zoo_env):
    started = time.perf_counter()
    with pytest.raises(DownloadError, match=r"after 1 attempt\(s\).*place it at"):
        cached_download("http://no-such-host.invalid/model.pth", progress=False, retry_wait_s=5)
    assert time.perf_counter() - started < 5  # no retry waits
