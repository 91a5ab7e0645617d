"""Ctrl-C during training: report it as an interruption whatever exception it surfaces as.

Python raises ``KeyboardInterrupt`` wherever the main thread is when the signal is handled. Inside
some C extensions that is not what comes out: numpy 2 retries a legacy ``__array__`` (pycocotools'
mask decoding) after emitting a warning, and a ``KeyboardInterrupt`` raised from that warning is
replaced by the original ``TypeError``. :func:`record_sigint` notes that the signal arrived, and
:func:`report_interruption` turns whatever a Ctrl-C surfaced as back into ``KeyboardInterrupt``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass
class SigintRecord:
    received: bool = False


@contextlib.contextmanager
def record_sigint() -> Iterator[SigintRecord]:
    """Within the block, SIGINT sets ``record.received`` and then does what it did before
    (by default: raise ``KeyboardInterrupt``). Off the main thread nothing is installed."""
    record = SigintRecord()
    if threading.current_thread() is not threading.main_thread():
        yield record
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        record.received = True
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield record
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def report_interruption(on_interrupt: Callable[[], None]) -> Iterator[None]:
    """Run the block; if it ends by ``KeyboardInterrupt``, or by any exception after a SIGINT
    arrived, call ``on_interrupt()`` and raise ``KeyboardInterrupt`` (chained to the exception the
    Ctrl-C surfaced as). Other exceptions pass through unchanged."""
    with record_sigint() as sigint:
        try:
            yield
        except BaseException as e:
            if not isinstance(e, KeyboardInterrupt) and not sigint.received:
                raise
            on_interrupt()
            if isinstance(e, KeyboardInterrupt):
                raise
            raise KeyboardInterrupt(f"Ctrl-C surfaced as {type(e).__name__}: {e}") from e
