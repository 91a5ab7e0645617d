"""Loading checkpoint files without executing code from them.

- ``.pth`` and other torch files: ``torch.load(..., weights_only=True)``, with numpy arrays
  allowed (detectron2 checkpoints may store weights as numpy arrays).
- ``.pkl`` files (detectron2 model zoo, e.g. ``R-50.pkl``): a restricted unpickler that can only
  rebuild containers and numpy arrays.

Anything else in a file (an arbitrary class, a function) is refused with an error that says why.
"""

from __future__ import annotations

import codecs
import pickle
from typing import Any

import numpy as np
import torch

__all__ = ["load_torch_weights", "load_pickle_weights", "UnsafeCheckpointError"]

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
    """
    try:
        with torch.serialization.safe_globals(_NUMPY_SAFE_GLOBALS):
            return torch.load(path, map_location=torch.device("cpu"), weights_only=True)
    except pickle.UnpicklingError as e:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # not a zip checkpoint (legacy format): report the original error
            unsafe = []
        allowed = {f"{g.__module__}.{g.__qualname__}" for g in _NUMPY_SAFE_GLOBALS}
        unsafe = [g for g in unsafe if g not in allowed]
        detail = f"found {', '.join(unsafe)}" if unsafe else str(e).splitlines()[-1][:300]
        raise UnsafeCheckpointError(_refusal(path, detail)) from e


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
    with open(path, "rb") as f:
        unpickler = _WeightsUnpickler(f, encoding="latin1")
        unpickler.path = path
        return unpickler.load()
