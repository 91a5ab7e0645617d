"""Utilities shared by every layer of the toolkit: distributed helpers, logging, events, file I/O.

``WandbWriter`` is also reachable here, where detrex has it (``detrex.utils.WandbWriter``); it is
defined in ``writers`` and imported on first access.
"""


def __getattr__(name: str):
    if name == "WandbWriter":
        from .writers import WandbWriter

        return WandbWriter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
