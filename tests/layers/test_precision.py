"""autocast_or_fp32: keeps the caller's autocast as it is, or switches it off."""

from __future__ import annotations

import torch

from detrex_ext.layers.precision import autocast_or_fp32


def _linear_dtype(keep: bool) -> torch.dtype:
    layer, x = torch.nn.Linear(4, 4), torch.randn(2, 4)
    with autocast_or_fp32(keep, "cpu"):
        return layer(x).dtype


def test_keeps_or_switches_off_the_callers_autocast() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _linear_dtype(keep=True) == torch.bfloat16
        assert _linear_dtype(keep=False) == torch.float32
    # with no autocast around, keeping it does not switch one on
    assert _linear_dtype(keep=True) == torch.float32
    assert _linear_dtype(keep=False) == torch.float32
