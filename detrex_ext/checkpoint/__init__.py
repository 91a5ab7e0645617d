"""Checkpoint loading and saving (``DetectionCheckpointer``; fvcore's ``PeriodicCheckpointer``)."""

from fvcore.common.checkpoint import PeriodicCheckpointer

from .detection_checkpoint import DetectionCheckpointer
from .key_matching import align_by_suffix, incompatible_keys_table
from .safe_load import (
    NotACheckpointError,
    UnsafeCheckpointError,
    check_checkpoint_file,
    load_pickle_weights,
    load_torch_weights,
)

__all__ = [
    "DetectionCheckpointer",
    "NotACheckpointError",
    "PeriodicCheckpointer",
    "UnsafeCheckpointError",
    "align_by_suffix",
    "check_checkpoint_file",
    "incompatible_keys_table",
    "load_pickle_weights",
    "load_torch_weights",
]
