"""Logging setup for runs: a console stream on the main process and one log file per rank.

The console handler writes through ``tqdm.write`` so that log lines and tqdm progress bars
(evaluation) share the terminal without garbling each other: an active bar is cleared, the line is
printed, and the bar is redrawn below it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

from tqdm import tqdm

__all__ = ["setup_logger", "TqdmLoggingHandler", "log_file_for_rank"]

_CONSOLE_FORMAT = "[%(asctime)s %(name)s]: %(message)s"
_FILE_FORMAT = "[%(asctime)s] %(name)s %(levelname)s: %(message)s"
_DATE_FORMAT = "%m/%d %H:%M:%S"
# Handlers installed by setup_logger carry this attribute, so a second call (a new run in the same
# process, e.g. a --multirun sweep) replaces them instead of stacking duplicates.
_OWNED = "_detrex_ext_owned"


class TqdmLoggingHandler(logging.StreamHandler):
    """A stream handler that prints through ``tqdm.write`` so progress bars stay intact."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


class _ConsoleFormatter(logging.Formatter):
    """Shortens the logger name (``detrex_ext.engine.hooks`` -> ``dx.engine.hooks``) and marks
    warnings and errors, in colour when the stream is a terminal."""

    def __init__(self, *args, abbrev_name: str | None, root_name: str, color: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self._root_name = root_name + "."
        self._abbrev_name = (abbrev_name + ".") if abbrev_name else self._root_name
        self._color = color

    def formatMessage(self, record: logging.LogRecord) -> str:
        # work on a copy: the same record also reaches the file handler, which keeps full names
        record = logging.makeLogRecord(record.__dict__)
        record.name = record.name.replace(self._root_name, self._abbrev_name, 1)
        message = super().formatMessage(record)
        if record.levelno >= logging.ERROR:
            prefix = "\x1b[31;1mERROR\x1b[0m" if self._color else "ERROR"
        elif record.levelno >= logging.WARNING:
            prefix = "\x1b[31;5mWARNING\x1b[0m" if self._color else "WARNING"
        else:
            return message
        return f"{prefix} {message}"


def log_file_for_rank(output: str, distributed_rank: int) -> str:
    """Log file path: ``output`` itself when it names a ``.txt``/``.log`` file, else
    ``output/log.txt``; ranks above 0 append ``.rank{N}``."""
    filename = output if output.endswith((".txt", ".log")) else os.path.join(output, "log.txt")
    if distributed_rank > 0:
        filename = f"{filename}.rank{distributed_rank}"
    return filename


def setup_logger(
    output: str | None = None,
    distributed_rank: int = 0,
    *,
    name: str = "detrex_ext",
    abbrev_name: str | None = "dx",
    color: bool = True,
    console_level: int = logging.INFO,
    stream: TextIO | None = None,
) -> logging.Logger:
    """Configure the logger ``name`` for a run (safe to call again for a new run).

    Args:
        output: a directory (the log goes to ``output/log.txt``) or a ``.txt``/``.log`` file. None
            disables file logging.
        distributed_rank: rank of this process. Only rank 0 logs to the console; every rank logs
            to its own file (``log.txt`` on rank 0, ``log.txt.rank{N}`` elsewhere).
        name: the logger to configure (its children inherit the handlers).
        abbrev_name: short form of ``name`` shown on the console.
        color: colour warnings and errors when the console is a terminal.
        console_level: threshold of console messages; files always receive DEBUG and above.
        stream: console stream (default ``sys.stdout``).

    Returns:
        The configured logger.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for handler in [h for h in logger.handlers if getattr(h, _OWNED, False)]:
        logger.removeHandler(handler)
        handler.close()

    if distributed_rank == 0:
        stream = stream if stream is not None else sys.stdout
        console = TqdmLoggingHandler(stream)
        console.setLevel(console_level)
        use_color = color and hasattr(stream, "isatty") and stream.isatty()
        console.setFormatter(
            _ConsoleFormatter(
                _CONSOLE_FORMAT,
                datefmt=_DATE_FORMAT,
                abbrev_name=abbrev_name,
                root_name=name,
                color=use_color,
            )
        )
        setattr(console, _OWNED, True)
        logger.addHandler(console)

    if output is not None:
        filename = log_file_for_rank(output, distributed_rank)
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
        file_handler = logging.FileHandler(filename, mode="a", encoding="utf-8")
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(logging.Formatter(_FILE_FORMAT, datefmt=_DATE_FORMAT))
        setattr(file_handler, _OWNED, True)
        logger.addHandler(file_handler)
    return logger
