"""Ctrl-C is reported as an interruption even when it surfaces as another exception (numpy 2
replaces a KeyboardInterrupt raised while it retries a legacy ``__array__`` by a TypeError)."""

from __future__ import annotations

import os
import signal

import pytest

from detrex_ext.engine.interrupt import record_sigint, report_interruption


def _ctrl_c_that_surfaces_as_type_error() -> None:
    try:
        os.kill(os.getpid(), signal.SIGINT)
        signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a call: the pending handler runs here
    except KeyboardInterrupt:
        raise TypeError("__array__() got an unexpected keyword argument 'copy'") from None


def test_a_ctrl_c_that_surfaces_as_another_exception_is_an_interruption() -> None:
    calls = []
    with pytest.raises(KeyboardInterrupt) as caught:
        with report_interruption(lambda: calls.append("interrupted")):
            _ctrl_c_that_surfaces_as_type_error()
    assert calls == ["interrupted"]
    assert isinstance(caught.value.__cause__, TypeError)


def test_plain_ctrl_c_is_reraised_as_is() -> None:
    calls = []
    with pytest.raises(KeyboardInterrupt) as caught:
        with report_interruption(lambda: calls.append("interrupted")):
            raise KeyboardInterrupt
    assert calls == ["interrupted"] and caught.value.__cause__ is None


def test_failures_without_a_signal_pass_through_unchanged() -> None:
    calls = []
    with pytest.raises(TypeError, match="genuine"):
        with report_interruption(lambda: calls.append("interrupted")):
            raise TypeError("genuine")
    assert calls == []


def test_the_previous_sigint_handler_runs_and_is_restored() -> None:
    seen = []

    def mine(signum, frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGINT, mine)
    try:
        with record_sigint() as record:
            os.kill(os.getpid(), signal.SIGINT)
            signal.pthread_sigmask(signal.SIG_BLOCK, [])
        assert record.received and seen == [signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, previous)
