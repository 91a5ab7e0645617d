"""One run per output folder.

Two runs writing the same ``train.output_dir`` would interleave ``metrics.json`` and overwrite
each other's checkpoints. The launcher therefore holds ``<output_dir>/.train_net.lock`` for the
whole run (rank 0 only: it is the process that writes there):

- the lock is an OS file lock (``flock``), so it is released by the kernel however the holder
  ends (Ctrl-C, ``kill -9``, a crash), and a second run that finds it held refuses to start,
  naming the holder's pid, host, start time and command;
- the file records its holder; a record left behind by a process that died (no clean release)
  is reported with a warning when the next run takes the lock over;
- once it holds the lock, the run deletes the temporary files that a save killed half-way left
  in the folder (``.<name>.tmp.<pid>.<id>`` from ``atomic_write``): no other run can be writing
  them.

Where the file system has no working file locks (some network file systems, Windows without
``fcntl``), the holder's pid is checked instead (same host only).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["LOCK_FILE_NAME", "OutputDirInUseError", "OutputDirLock", "remove_stale_temporary_files"]

logger = logging.getLogger(__name__)

LOCK_FILE_NAME = ".train_net.lock"
_TEMPORARY_FILE = re.compile(r"^\..+\.tmp\.\d+\.[0-9a-f]{8}$")  # atomic_write's temporaries

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


class OutputDirInUseError(RuntimeError):
    """Another live run holds the output folder."""


def _describe(holder: dict[str, Any]) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    command = holder.get("command", "")
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {when}" + (
        f": {command}" if command else ""
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _alive_elsewhere(holder: dict[str, Any]) -> bool:
    """The recorded holder is another live process on this host (the check without OS locks)."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    return pid != os.getpid() and _pid_alive(pid)


class OutputDirLock:
    """The lock of one output folder (see the module docstring).

    Args:
        output_dir: the run's ``train.output_dir`` (created if needed).
    """

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_FILE_NAME
        self._file = None
        # the record found when the lock was taken: a run that did not end cleanly
        self.previous_holder: dict[str, Any] = {}

    def _read_holder(self) -> dict[str, Any]:
        try:
            text = self.path.read_text()
        except (OSError, UnicodeDecodeError):
            return {}
        try:
            holder = json.loads(text) if text.strip() else {}
        except ValueError:
            return {"pid": "?", "command": text.strip()[:200]}
        return holder if isinstance(holder, dict) else {}

    def _try_os_lock(self) -> bool | None:
        """True when locked, False when another process holds it, None without OS locks."""
        if fcntl is None:
            return None
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            logger.warning(f"File locks do not work in {self.output_dir} ({e}); checking pids.")
            return None
        return True

    def _in_use_error(self, holder: dict[str, Any]) -> OutputDirInUseError:
        return OutputDirInUseError(
            f"{self.output_dir} is in use by another run ({_describe(holder)}). Two runs in one "
            "output folder would overwrite each other's checkpoints and metrics: wait for that "
            "run to end, or give this one another folder (train.output_dir=...). If no such "
            f"process exists, delete {self.path}."
        )

    def acquire(self) -> None:
        """Take the lock, or raise :class:`OutputDirInUseError` naming the holder."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")  # noqa: SIM115 - held for the run's life
        locked = self._try_os_lock()
        previous = self._read_holder()
        if locked is False:
            self._file.close()
            self._file = None
            raise self._in_use_error(previous)
        if locked is None and _alive_elsewhere(previous):
            self._file.close()
            self._file = None
            raise self._in_use_error(previous)
        self.previous_holder = previous
        self._write_holder()

    def log_takeover(self) -> None:
        """Warn (once logging is set up) when the lock was left by a run that died."""
        if self.previous_holder:
            logger.warning(
                f"Took over the lock of {self.output_dir} left by a run that did not end "
                f"cleanly ({_describe(self.previous_holder)}); it is no longer running."
            )

    def check_free(self) -> None:
        """Raise :class:`OutputDirInUseError` if a live run holds the folder (nothing is taken)."""
        if not self.path.exists():
            return
        with open(self.path, "a+") as self._file:
            locked = self._try_os_lock()
            holder = self._read_holder()
        self._file = None  # closing dropped the lock, the record is left as it was
        if locked is False or (locked is None and _alive_elsewhere(holder)):
            raise self._in_use_error(holder)

    def _write_holder(self) -> None:
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join(sys.argv),
        }
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps(holder) + "\n")
        self._file.flush()

    def release(self) -> None:
        """Clear the record and drop the lock (the empty file stays: deleting it could let two
        runs lock two different files)."""
        if self._file is None:
            return
        try:
            self._file.seek(0)
            self._file.truncate()
            self._file.flush()
        finally:
            self._file.close()  # closing drops the flock
            self._file = None

    def __enter__(self) -> OutputDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def remove_stale_temporary_files(output_dir: str | os.PathLike) -> list[str]:
    """Delete the temporary files of interrupted atomic saves in ``output_dir`` (call it only
    while holding the folder's lock); returns their names."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and _TEMPORARY_FILE.match(path.name):
            size = path.stat().st_size
            path.unlink()
            removed.append(path.name)
            logger.warning(
                f"Removed {path.name} ({size / 2**20:.1f} MiB) from {folder}: the temporary file "
                "of a save that was interrupted; the checkpoint it would have replaced is intact."
            )
    return removed
