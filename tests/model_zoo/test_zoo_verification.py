"""Downloads are verified every time they are used: a cached file damaged after its download
(even with its modification time kept) is detected; a read-only cache holding a verified file is
usable; a truncated file in DETREX_ZOO_MIRROR (a folder or a server) is caught at download, and
loading errors name the file."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import subprocess

import pytest
import torch

from detrex_ext import model_zoo
from detrex_ext.checkpoint import DetectionCheckpointer, NotACheckpointError, verification
from detrex_ext.checkpoint.download import (
    ChecksumMismatchError,
    DownloadError,
    cached_download,
)

NAME = "model.pth"
ZOO_NAME = "maskdino_r50_ade20k_semantic_seg_160k"


def _checkpoint_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": {"fc.weight": torch.arange(4000.0).reshape(1000, 4)}}, buffer)
    return buffer.getvalue()


PAYLOAD = _checkpoint_bytes()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _damage_keeping_mtime(path) -> None:
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_cached_file_damaged_later_is_detected_on_use(file_server, zoo_env, caplog) -> None:
    file_server.files[NAME] = PAYLOAD
    url = file_server.url(NAME)
    path = cached_download(url, progress=False)
    _damage_keeping_mtime(path)

    with pytest.raises(ChecksumMismatchError) as error:
        cached_download(url, progress=False, offline=True)
    message = str(error.value)
    assert f"the cached file {path} has sha256 " in message
    assert f"but {_sha(PAYLOAD)} is recorded at its download in {path}.sha256" in message
    assert "replace it with a good copy" in message

    with caplog.at_level(logging.WARNING, logger="detrex_ext"):
        assert cached_download(url, progress=False).read_bytes() == PAYLOAD  # fetched again
    assert "downloading it again" in caplog.text
    assert len(file_server.requests) == 2


def test_a_damaged_cached_checkpoint_is_not_loaded(file_server, zoo_env, monkeypatch) -> None:
    """The checkpointer's URL path (train.init_checkpoint=http://...) goes through the cache."""
    file_server.files[NAME] = PAYLOAD
    url = file_server.url(NAME)
    model = torch.nn.Module()
    model.fc = torch.nn.Linear(4, 1000, bias=False)
    DetectionCheckpointer(model).load(url)
    cached = next((zoo_env / "urls").rglob(NAME))
    _damage_keeping_mtime(cached)
    verification._DIGESTS.clear()  # a new process: nothing known about the file
    monkeypatch.setenv("DETREX_OFFLINE", "1")
    with pytest.raises(ChecksumMismatchError, match=f"the cached file {cached} has sha256"):
        DetectionCheckpointer(model).load(url)
    monkeypatch.delenv("DETREX_OFFLINE")
    model.fc.weight.data.zero_()
    DetectionCheckpointer(model).load(url)  # online: fetched again, verified, loaded
    assert torch.equal(model.fc.weight, torch.arange(4000.0).reshape(1000, 4))


def test_hashing_is_done_once_per_process_while_the_file_is_unchanged(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)
    calls = []
    real = hashlib.sha256

    def counting():
        calls.append(1)
        return real()

    monkeypatch.setattr(verification.hashlib, "sha256", counting)
    digest = verification.file_sha256(path)
    assert verification.file_sha256(path) == digest and len(calls) == 1
    path.write_bytes(b"y" * 1000)  # same size; new modification time
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 1000))
    assert verification.file_sha256(path) != digest and len(calls) == 2


@contextlib.contextmanager
def _read_only(folder):
    """Make ``folder`` read-only for this process: permission bits, or, for root (whom they do
    not stop), the immutable attribute."""
    probe = folder / ".probe"
    os.chmod(folder, 0o555)
    immutable = False
    try:
        try:
            probe.write_text("")
        except PermissionError:
            pass
        else:  # root
            probe.unlink()
            done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
            if done.returncode != 0:
                pytest.skip("cannot make a folder read-only for root here (no chattr)")
            immutable = True
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        os.chmod(folder, 0o755)


def test_a_read_only_cache_holding_a_verified_file_is_usable(file_server, zoo_env) -> None:
    file_server.files[NAME] = PAYLOAD
    url = file_server.url(NAME)
    path = cached_download(url, progress=False)
    (path.parent / (NAME + ".lock")).unlink(missing_ok=True)
    with _read_only(path.parent):
        assert cached_download(url, progress=False) == path
        assert len(file_server.requests) == 1
        file_server.files["other.pth"] = PAYLOAD
        with pytest.raises(DownloadError, match="set DETREX_CACHE to a writable directory"):
            cached_download(file_server.url("other.pth"), progress=False)


def test_truncated_file_in_a_mirror_folder_is_detected(tmp_path, zoo_env, monkeypatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    filename = model_zoo.get_entry(ZOO_NAME).filename
    monkeypatch.setenv("DETREX_ZOO_MIRROR", str(mirror))
    (mirror / filename).write_bytes(PAYLOAD[: len(PAYLOAD) // 2])
    with pytest.raises(ChecksumMismatchError) as error:
        model_zoo.get_checkpoint(ZOO_NAME)
    assert str(error.value).startswith(
        f"{mirror / filename} is a truncated or damaged zip archive of {len(PAYLOAD) // 2} bytes"
    )

    # a complete file is recorded at its first use and checked at every later one
    (mirror / filename).write_bytes(PAYLOAD)
    assert model_zoo.get_checkpoint(ZOO_NAME) == mirror / filename
    _damage_keeping_mtime(mirror / filename)
    verification._DIGESTS.clear()  # a new process: nothing known about the file
    with pytest.raises(ChecksumMismatchError, match="recorded at its first use"):
        model_zoo.get_checkpoint(ZOO_NAME)

    # a record published next to the file in the mirror is used
    (mirror / filename).write_bytes(PAYLOAD)
    (mirror / (filename + ".sha256")).write_text(f"{_sha(b'the published file')}  {filename}\n")
    with pytest.raises(ChecksumMismatchError, match=f"recorded in {mirror / filename}.sha256"):
        model_zoo.get_checkpoint(ZOO_NAME)


def test_truncated_file_on_a_mirror_server_is_detected(file_server, zoo_env, monkeypatch) -> None:
    filename = model_zoo.get_entry(ZOO_NAME).filename
    monkeypatch.setenv("DETREX_ZOO_MIRROR", file_server.base_url)
    file_server.files[filename] = PAYLOAD[:-100]  # served whole, with its (short) length
    with pytest.raises(ChecksumMismatchError) as error:
        model_zoo.get_checkpoint(ZOO_NAME, progress=False)
    assert "the download is a truncated or damaged zip archive" in str(error.value)
    assert "Nothing was written to the cache" in str(error.value)
    assert not (zoo_env / "checkpoints" / filename).exists()

    # a mirror that publishes <file>.sha256: a changed byte is caught too
    damaged = bytearray(PAYLOAD)
    damaged[200] ^= 0xFF
    file_server.files[filename] = bytes(damaged)
    file_server.files[filename + ".sha256"] = f"{_sha(PAYLOAD)}  {filename}\n".encode()
    with pytest.raises(ChecksumMismatchError, match=f"expected {_sha(PAYLOAD)}, got "):
        model_zoo.get_checkpoint(ZOO_NAME, progress=False)
    file_server.files[filename] = PAYLOAD
    assert model_zoo.get_checkpoint(ZOO_NAME, progress=False).read_bytes() == PAYLOAD


def test_load_errors_name_the_file(tmp_path, zoo_env, monkeypatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    filename = model_zoo.get_entry(ZOO_NAME).filename
    (mirror / filename).write_text("<html>rate limited</html>")
    monkeypatch.setenv("DETREX_ZOO_MIRROR", str(mirror))
    model = torch.nn.Linear(4, 2)
    with pytest.raises(NotACheckpointError) as error:
        DetectionCheckpointer(model).load(ZOO_NAME)
    assert str(error.value).startswith(f"{mirror / filename} is not a checkpoint (an HTML page")
