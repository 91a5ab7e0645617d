"""Where a block's math runs: under the caller's autocast, or in fp32 with autocast off."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast_or_fp32"]


def autocast_or_fp32(
    keep_caller_autocast: bool, device_type: str
) -> contextlib.AbstractContextManager:
    """The context to run a block in.

    Args:
        keep_caller_autocast: True leaves the caller's autocast as it is (on with its dtype, or
            off); False switches autocast off, so the block computes in its inputs' dtype (fp32
            in the official Mask DINO layers). ``torch.autocast(enabled=True)`` would not do for
            True: it imposes its own dtype instead of keeping the caller's.
        device_type: ``"cuda"``, ``"cpu"``, ... of the block's tensors.
    """
    if keep_caller_autocast:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)
