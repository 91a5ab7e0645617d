"""Files that are not checkpoints: each is refused by DetectionCheckpointer.load with
"<path> is not a checkpoint (<what it is>)", and damaged files are never called unsafe (nor is
weights_only=False advised for them). The checks run before the model is touched."""

from __future__ import annotations

import pickle
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from detrex_ext.checkpoint import (
    DetectionCheckpointer,
    NotACheckpointError,
    UnsafeCheckpointError,
)
from detrex_ext.checkpoint.detection_checkpoint import resolve_checkpoint_path


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)


def _good_checkpoint(path: Path) -> bytes:
    torch.save({"model": Net().state_dict(), "iteration": 3}, path)
    return path.read_bytes()


def _random_bytes(size: int) -> bytes:
    data = random.Random(0).randbytes(size)
    return b"\x13" + data[1:]  # not a pickle opcode: random data, whatever the seed gives


def _cases(tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    good = _good_checkpoint(tmp_path / "good.pth")
    middle = len(good) // 2
    return {
        "empty.pth": (b"", r"the file is empty, 0 bytes"),
        "notes.pth": (b"epoch 3 loss 0.25\nepoch 4 loss 0.21\n", r"a text file starting with"),
        "page.pth": (b"<!DOCTYPE html><html><body>Not Found", r"an HTML page, not weights"),
        "lfs.pth": (
            b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n",
            r"a Git LFS pointer: run `git lfs pull`",
        ),
        "random.pth": (_random_bytes(4096), r"neither a PyTorch zip archive nor a pickle"),
        "truncated.pth": (good[:middle], r"a truncated or damaged zip archive of \d+ bytes"),
        "corrupted.pth": (good[:60] + bytes(200) + good[260:], r"damaged"),
        "plain.zip.pth": (_zip_without_data_pkl(tmp_path), r"a zip archive without PyTorch's"),
        "other_pickle.pth": (pickle.dumps([1, 2, 3], protocol=4), r"not written by torch.save"),
    }


def _zip_without_data_pkl(tmp_path: Path) -> bytes:
    import zipfile

    path = tmp_path / "plain.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    return path.read_bytes()


def test_files_that_are_not_checkpoints_are_named_and_described(tmp_path: Path) -> None:
    for name, (content, what) in _cases(tmp_path).items():
        path = tmp_path / name
        path.write_bytes(content)
        model = Net()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(NotACheckpointError) as error:
            DetectionCheckpointer(model).load(str(path))
        message = str(error.value)
        assert message.startswith(f"{path} is not a checkpoint ("), (name, message)
        assert re.search(what, message), (name, message)
        assert "weights_only=False" not in message and "Refusing" not in message, name
        assert not isinstance(error.value, UnsafeCheckpointError)
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_cheap_checks_run_before_a_model_exists(tmp_path: Path) -> None:
    """resolve_checkpoint_path is what the launcher calls before building the model."""
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(NotACheckpointError, match="empty.pth is not a checkpoint"):
        resolve_checkpoint_path(str(tmp_path / "empty.pth"))
    with pytest.raises(FileNotFoundError, match="it is a folder"):
        resolve_checkpoint_path(str(tmp_path))
    _good_checkpoint(tmp_path / "good.pth")
    assert resolve_checkpoint_path(str(tmp_path / "good.pth")) == (str(tmp_path / "good.pth"), None)


@pytest.mark.parametrize(
    "content, what",
    [
        ({"model": [1, 2, 3]}, r"its 'model' entry is a list, not a mapping of arrays"),
        ({"model": {"fc.weight": "abc"}}, r"1 of the 1 entries of 'model' are not arrays"),
        ([np.zeros(3)], r"it holds a list, not a state dict"),
    ],
)
def test_torch_files_without_a_mapping_of_arrays(tmp_path: Path, content, what) -> None:
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    with pytest.raises(NotACheckpointError, match=what) as error:
        DetectionCheckpointer(Net()).load(str(path))
    assert str(error.value).startswith(f"{path} is not a checkpoint (")


@pytest.mark.parametrize(
    "content, what",
    [
        (
            {"model": [np.zeros(3)], "__author__": "x"},
            r"its 'model' entry is a list, not a mapping of arrays",
        ),
        (
            {"model": {"fc.weight": [1.0, 2.0]}, "__author__": "x"},
            r"'fc.weight' is a list",
        ),
    ],
)
def test_pkl_whose_model_is_not_a_mapping_of_arrays(tmp_path: Path, content, what) -> None:
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(NotACheckpointError, match=what) as error:
        DetectionCheckpointer(Net()).load(str(path))
    assert str(error.value).startswith(f"{path} is not a checkpoint (")


@pytest.mark.parametrize("content", [b"", b"text, not a pickle\n", b"\x80\x02}q\x00(X"])
def test_damaged_pkl_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "R-50.pkl"
    path.write_bytes(content)
    with pytest.raises(NotACheckpointError) as error:
        DetectionCheckpointer(Net()).load(str(path))
    assert str(error.value).startswith(f"{path} is not a checkpoint (")
    assert not isinstance(error.value, UnsafeCheckpointError)
