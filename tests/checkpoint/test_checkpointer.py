"""DetectionCheckpointer: atomic saves (also under a real crash), weights-only loading, .pkl
model-zoo files with suffix matching, model-provided key adaptation, the incompatible-keys table,
weights-only init loads, and URLs through a local HTTP server with the iopath cache."""

from __future__ import annotations

import functools
import hashlib
import http.server
import logging
import os
import pickle
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
from torch import nn

from detrex_ext.checkpoint import (
    DetectionCheckpointer,
    UnsafeCheckpointError,
    align_by_suffix,
    detection_checkpoint,
)


class Net(nn.Module):
    def __init__(self, hidden: int = 3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, hidden)
        self.fc2 = nn.Linear(hidden, 2)


class Wrapped(nn.Module):
    """Net under a ``backbone.`` prefix, as a detector holds an ImageNet backbone."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = Net()
        self.head = nn.Linear(2, 1)


class RenamingNet(Net):
    """Loads checkpoints of an older layout where ``fc1`` was called ``encoder``."""

    def adapt_checkpoint_state_dict(self, state_dict: dict) -> dict:
        return {k.replace("encoder.", "fc1.", 1): v for k, v in state_dict.items()}


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


def test_save_names_and_last_checkpoint(tmp_path: Path) -> None:
    model = Net()
    checkpointer = DetectionCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000004", iteration=4)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0000004.pth")
    other = Net()
    extra = DetectionCheckpointer(other, str(tmp_path)).resume_or_load("", resume=True)
    assert extra == {"iteration": 4} and _same_weights(model, other)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000004.pth"]


def test_failed_write_leaves_previous_checkpoint_and_no_partial_file(
    tmp_path: Path, monkeypatch
) -> None:
    model = Net()
    checkpointer = DetectionCheckpointer(model, str(tmp_path))
    checkpointer.save("model_a")

    def crash_mid_write(obj, f):
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError("No space left on device (simulated)")

    monkeypatch.setattr(detection_checkpoint.torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="simulated"):
        checkpointer.save("model_b")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_a.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_a.pth"
    restored = Net()
    DetectionCheckpointer(restored, str(tmp_path)).resume_or_load("", resume=True)
    assert _same_weights(model, restored)


def test_crash_while_tagging_keeps_last_checkpoint_pointing_at_a_complete_file(
    tmp_path: Path, monkeypatch
) -> None:
    checkpointer = DetectionCheckpointer(Net(), str(tmp_path))
    checkpointer.save("model_a")
    real_replace = os.replace

    def failing_replace(src, dst):
        if os.path.basename(dst) == "last_checkpoint":
            raise OSError("killed before the rename (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        checkpointer.save("model_b")
    monkeypatch.undo()
    assert (tmp_path / "last_checkpoint").read_text() == "model_a.pth"
    torch.load(tmp_path / "model_b.pth", weights_only=True)  # complete, just not tagged yet
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_process_killed_mid_write_leaves_a_loadable_last_checkpoint(tmp_path: Path) -> None:
    """A real crash: the process dies (os._exit) halfway through writing the second checkpoint."""
    script = textwrap.dedent(f"""
        import os, torch
        from torch import nn
        from detrex_ext.checkpoint import DetectionCheckpointer, detection_checkpoint
        model = nn.Linear(64, 64)
        checkpointer = DetectionCheckpointer(model, {str(tmp_path)!r})
        checkpointer.save("model_0000004")
        real_save = torch.save
        def dying_save(obj, f):
            f.write(b"PK\\x03\\x04 first bytes of the archive")
            f.flush()
            os._exit(3)
        detection_checkpoint.torch.save = dying_save
        checkpointer.save("model_0000009")
        """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == 3, proc.stderr.decode()
    names = sorted(os.listdir(tmp_path))
    assert "model_0000009.pth" not in names
    assert any(n.startswith(".model_0000009.pth.tmp.") for n in names)  # the torn temp file
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    model = nn.Linear(64, 64)
    checkpointer = DetectionCheckpointer(model, str(tmp_path))
    assert checkpointer.get_all_checkpoint_files() == [str(tmp_path / "model_0000004.pth")]
    checkpointer.resume_or_load("", resume=True)


def test_weights_only_refuses_arbitrary_objects_without_running_them(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    path = tmp_path / "evil.pth"
    torch.save({"model": Net().state_dict(), "payload": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="posix.mkdir|os.mkdir|mkdir"):
        DetectionCheckpointer(Net()).load(str(path))
    assert not marker.exists()


def test_numpy_weights_and_bare_state_dicts_load(tmp_path: Path) -> None:
    source = Net()
    arrays = {k: v.numpy().copy() for k, v in source.state_dict().items()}
    torch.save(arrays, tmp_path / "bare_numpy.pth")  # no "model" key, numpy values
    target = Net()
    DetectionCheckpointer(target).load(str(tmp_path / "bare_numpy.pth"))
    assert _same_weights(source, target)


def test_zoo_pkl_with_matching_heuristics_loads_by_suffix(tmp_path: Path) -> None:
    source = Net()
    zoo = {
        "model": {k: v.numpy() for k, v in source.state_dict().items()},
        "__author__": "unit test",
        "matching_heuristics": True,
    }
    with open(tmp_path / "R-tiny.pkl", "wb") as f:
        pickle.dump(zoo, f, protocol=2)
    target = Wrapped()
    head_before = target.head.weight.detach().clone()
    DetectionCheckpointer(target).load(str(tmp_path / "R-tiny.pkl"))
    assert _same_weights(source, target.backbone)
    assert torch.equal(target.head.weight, head_before)


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"model": {}, "__author__": "x", "p": _MkdirPayload(str(marker))}, f)
    with pytest.raises(UnsafeCheckpointError, match="mkdir"):
        DetectionCheckpointer(Net()).load(str(tmp_path / "evil.pkl"))
    assert not marker.exists()


class _MkdirPayload:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_ambiguous_suffix_match_is_an_error() -> None:
    with pytest.raises(ValueError, match="several model keys"):
        align_by_suffix(["a.weight", "b.weight"], {"weight": torch.zeros(1)})


def test_adapt_hook_runs_before_matching_and_report_table(tmp_path: Path, caplog) -> None:
    """Keys renamed by the model's adapt_checkpoint_state_dict are matched, shape-checked and
    reported under their new names; the table lists every kind of problem."""
    old = {
        "encoder.weight": torch.randn(5, 4),  # -> fc1.weight, wrong shape (model: 3x4)
        "encoder.bias": torch.randn(3),  # -> fc1.bias, loads
        "extra.a": torch.zeros(1),
        "extra.b": torch.zeros(1),
    }
    torch.save({"model": old}, tmp_path / "old_layout.pth")
    model = RenamingNet()
    fc1_weight = model.fc1.weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="detrex_ext.checkpoint"):
        DetectionCheckpointer(model).load(str(tmp_path / "old_layout.pth"))
    assert torch.equal(model.fc1.bias, old["encoder.bias"])
    assert torch.equal(model.fc1.weight, fc1_weight)  # skipped, not half-loaded
    report = caplog.text
    assert "1 shape mismatch(es), 3 missing and 2 unexpected" in report
    assert "shape mismatch (skipped)" in report and "fc1.weight" in report
    assert "(5, 4)" in report and "(3, 4)" in report
    assert "fc2.{bias, weight}" in report and "extra.{a, b}" in report
    assert "encoder" not in report


def test_init_checkpoint_loads_weights_only(tmp_path: Path) -> None:
    """resume=False (train.init_checkpoint) restores the model but no checkpointable."""

    class Counter:
        def __init__(self) -> None:
            self.value = 0

        def state_dict(self) -> dict:
            return {"value": self.value}

        def load_state_dict(self, state: dict) -> None:
            self.value = state["value"]

    source, counter = Net(), Counter()
    counter.value = 7
    DetectionCheckpointer(source, str(tmp_path), trainer=counter).save("model_final")
    target, fresh = Net(), Counter()
    checkpointer = DetectionCheckpointer(target, str(tmp_path / "new_run"), trainer=fresh)
    checkpointer.resume_or_load(str(tmp_path / "model_final.pth"), resume=False)
    assert _same_weights(source, target) and fresh.value == 0
    # --resume in a folder without last_checkpoint falls back to the same weights-only load
    again = Counter()
    DetectionCheckpointer(Net(), str(tmp_path / "new_run"), trainer=again).resume_or_load(
        str(tmp_path / "model_final.pth"), resume=True
    )
    assert again.value == 0
    DetectionCheckpointer(Net(), str(tmp_path), trainer=again).resume_or_load("", resume=True)
    assert again.value == 7


def test_ddp_prefix_is_stripped(tmp_path: Path) -> None:
    source = Net()
    torch.save(
        {"model": {f"module.{k}": v for k, v in source.state_dict().items()}},
        tmp_path / "ddp.pth",
    )
    target = Net()
    DetectionCheckpointer(target).load(str(tmp_path / "ddp.pth"))
    assert _same_weights(source, target)


@pytest.fixture
def http_root(tmp_path: Path):
    """A local HTTP server over ``tmp_path/www`` (no network needed)."""
    root = tmp_path / "www"
    root.mkdir()
    _QuietHandler.requests = []
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:
        _QuietHandler.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


def test_url_is_downloaded_once_into_the_verified_cache(http_root, tmp_path, monkeypatch) -> None:
    root, base_url = http_root
    cache = tmp_path / "cache"
    monkeypatch.setenv("DETREX_CACHE", str(cache))
    (root / "weights").mkdir()
    source = Net()
    torch.save({"model": source.state_dict()}, root / "weights" / "net.pth")
    target = Net()
    DetectionCheckpointer(target).load(f"{base_url}/weights/net.pth")
    assert _same_weights(source, target)
    host = urlparse(base_url).netloc.replace(":", "_")
    cached = cache / "urls" / host / "weights" / "net.pth"
    assert cached.is_file()
    # the first download's sha256 is recorded next to the file
    recorded = Path(str(cached) + ".sha256").read_text().split()[0]
    assert recorded == hashlib.sha256((root / "weights" / "net.pth").read_bytes()).hexdigest()

    # query strings: matching_heuristics is ours (suffix matching into a wrapped model)
    wrapped = Wrapped()
    DetectionCheckpointer(wrapped).load(f"{base_url}/weights/net.pth?matching_heuristics=True")
    assert _same_weights(source, wrapped.backbone)
    assert _QuietHandler.requests == ["/weights/net.pth"]  # one download, then the cache


def test_bare_names_resolve_through_the_model_zoo(tmp_path: Path, monkeypatch) -> None:
    from detrex_ext.checkpoint import detection_checkpoint

    source = Net()
    torch.save({"model": source.state_dict()}, tmp_path / "zoo_file.pth")
    asked = []

    def fake_get_checkpoint(name: str) -> Path:
        asked.append(name)
        if name != "tiny_zoo_model":
            raise KeyError(f"{name!r} is not a released model")
        return tmp_path / "zoo_file.pth"

    monkeypatch.setattr(detection_checkpoint, "get_checkpoint", fake_get_checkpoint)
    target = Net()
    DetectionCheckpointer(target).load("tiny_zoo_model")
    assert _same_weights(source, target) and asked == ["tiny_zoo_model"]
    with pytest.raises(FileNotFoundError, match="neither a file, a URL nor a released model"):
        DetectionCheckpointer(Net()).load("typo_model")
