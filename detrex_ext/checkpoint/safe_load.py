"""Loading checkpoint files without executing code from them.

- ``.pth`` and other torch files: ``torch.load(..., weights_only=True)``, with numpy arrays
  allowed (detectron2 checkpoints may store weights as numpy arrays).
- ``.pkl`` files (detectron2 model zoo, e.g. ``R-50.pkl``): a restricted unpickler that can only
  rebuild containers and numpy arrays.

Anything else in a file (an arbitrary class, a function) is refused with an error that says why
(``UnsafeCheckpointError``). A file that is no checkpoint at all (empty, text, an HTML error page,
a Git LFS pointer, random bytes, a truncated or corrupted archive) raises ``NotACheckpointError``
naming the path and what it is instead; such a file is damaged, not unsafe.
"""

from __future__ import annotations

import codecs
import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = [
    "NotACheckpointError",
    "UnsafeCheckpointError",
    "check_checkpoint_file",
    "check_state_dict",
    "load_pickle_weights",
    "load_torch_weights",
]

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar

_NUMPY_DTYPE_CLASSES = [
    type(np.dtype(t))
    for t in (
        np.bool_,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.float16,
        np.float32,
        np.float64,
    )
]
# Globals needed to rebuild numpy arrays and scalars; none of them can run arbitrary code.
_NUMPY_SAFE_GLOBALS = [_reconstruct, scalar, np.ndarray, np.dtype, codecs.encode]
_NUMPY_SAFE_GLOBALS += _NUMPY_DTYPE_CLASSES


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The file contains objects other than tensors, arrays and plain containers."""


class NotACheckpointError(ValueError):
    """The file is not a readable checkpoint (empty, text, truncated, corrupted...)."""


def _not_a_checkpoint(path: str, what: str) -> NotACheckpointError:
    return NotACheckpointError(
        f"{path} is not a checkpoint ({what}). Check the path; if it is a download or a copy, "
        "fetch or copy it again."
    )


def _text_kind(head: bytes) -> str | None:
    """What a file that starts with ``head`` is, when it is text; None for binary data."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not all(c.isprintable() or c in "\r\n\t" for c in text):
        return None
    stripped = text.lstrip().lower()
    if stripped.startswith(("<!doctype html", "<html")):
        return "an HTML page, not weights: a download that saved an error or login page?"
    if stripped.startswith("version https://git-lfs"):
        return "a Git LFS pointer: run `git lfs pull` to fetch the real file"
    first_line = text.strip().splitlines()[0][:60] if text.strip() else ""
    return f"a text file starting with {first_line!r}"


def check_checkpoint_file(path: str | os.PathLike) -> None:
    """Cheap checks (the first bytes and, for zip archives, their directory) that ``path`` can be
    a checkpoint; raises ``NotACheckpointError`` saying what the file is instead."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size == 0:
        raise _not_a_checkpoint(path, "the file is empty, 0 bytes")
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04"):  # PyTorch's zip format
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise _not_a_checkpoint(
                path, f"a truncated or damaged zip archive of {size} bytes: {e}"
            ) from None
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            raise _not_a_checkpoint(path, "a zip archive without PyTorch's data.pkl")
        return
    if head[:1] == b"\x80":  # a pickle (torch's legacy format, detectron2 .pkl files)
        return
    kind = _text_kind(head)
    if kind is None:
        kind = f"neither a PyTorch zip archive nor a pickle; it starts with bytes {head[:8].hex()}"
    raise _not_a_checkpoint(path, kind)


def check_state_dict(path: str, state_dict: Any, entry: str = "model") -> None:
    """Raise ``NotACheckpointError`` unless ``state_dict`` maps names to tensors or arrays."""
    if not isinstance(state_dict, Mapping):
        raise _not_a_checkpoint(
            path, f"its {entry!r} entry is a {type(state_dict).__name__}, not a mapping of arrays"
        )
    bad = [
        k
        for k, v in state_dict.items()
        if not isinstance(k, str) or not isinstance(v, (torch.Tensor, np.ndarray, int, float))
    ]
    if bad:
        key = bad[0]
        kind = type(state_dict[key]).__name__
        raise _not_a_checkpoint(
            path,
            f"{len(bad)} of the {len(state_dict)} entries of {entry!r} are not arrays, e.g. "
            f"{key!r} is a {kind}",
        )


def _refusal(path: str, detail: str) -> str:
    return (
        f"Refusing to load {path}: it contains Python objects other than tensors, numpy arrays "
        f"and plain containers ({detail}), and unpickling them could run arbitrary code. If you "
        "trust the file, re-save only its weights in a trusted environment, e.g. "
        "torch.save({'model': torch.load(path, weights_only=False)['model']}, new_path)."
    )


def load_torch_weights(path: str) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with numpy arrays allowed.

    Raises:
        UnsafeCheckpointError: the file needs globals outside the allowlist.
        NotACheckpointError: the file is no checkpoint, or a damaged one.
    """
    check_checkpoint_file(path)
    try:
        with torch.serialization.safe_globals(_NUMPY_SAFE_GLOBALS):
            return torch.load(path, map_location=torch.device("cpu"), weights_only=True)
    except pickle.UnpicklingError as e:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # not a zip checkpoint (legacy format): the error message tells
            unsafe = []
        allowed = {f"{g.__module__}.{g.__qualname__}" for g in _NUMPY_SAFE_GLOBALS}
        unsafe = [g for g in unsafe if g not in allowed]
        reason = _torch_reason(e)
        if unsafe or "GLOBAL" in str(e) or "global" in reason.lower():
            detail = f"found {', '.join(unsafe)}" if unsafe else reason
            raise UnsafeCheckpointError(_refusal(path, detail)) from e
        raise _not_a_checkpoint(path, f"damaged or not written by torch.save: {reason}") from e
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as e:
        # miniz errors for corrupted archives, EOF for truncated pickles
        reason = _torch_reason(e)
        raise _not_a_checkpoint(path, f"damaged or truncated: {reason}") from e


def _torch_reason(error: BaseException) -> str:
    """The informative line of a torch.load error (its long advice about weights_only left
    out: it does not apply to damaged files)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "weights_only" in line or "torch.load" in line or line.startswith("Check the doc"):
            continue
        line = line.split(". This is an internal miniz error")[0]
        return f"{type(error).__name__}: {line[:200]}"
    return type(error).__name__


class _WeightsUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise UnsafeCheckpointError(_refusal(getattr(self, "path", "<pickle>"), f"{module}.{name}"))


def load_pickle_weights(path: str) -> Any:
    """Unpickle a detectron2-style ``.pkl`` weight file (dicts of numpy arrays), latin1-encoded
    like detectron2 (files written by Python 2 tools), refusing every other global."""
    check_checkpoint_file(path)
    with open(path, "rb") as f:
        unpickler = _WeightsUnpickler(f, encoding="latin1")
        unpickler.path = path
        try:
            return unpickler.load()
        except UnsafeCheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as e:
            raise _not_a_checkpoint(path, f"damaged or truncated: {type(e).__name__}: {e}") from e
