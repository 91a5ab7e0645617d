"""Which checkpoint ``--resume`` continues from.

``last_checkpoint`` names the newest complete checkpoint (saves are atomic). When it cannot be
used (empty, naming a file that is gone, naming a damaged file, or missing while checkpoints are
there), the newest intact checkpoint of the folder is used instead, with a warning that says why;
when nothing there is intact, :class:`ResumeError` lists what was found.
"""

from __future__ import annotations

import os

__all__ = ["ResumeError", "describe_checkpoints", "resume_candidates"]

LAST_CHECKPOINT = "last_checkpoint"


class ResumeError(RuntimeError):
    """``--resume`` found checkpoints, but none it can continue from."""


def _checkpoint_files(save_dir: str) -> list[str]:
    """``*.pth`` files of ``save_dir`` (not the hidden temporaries of interrupted saves), newest
    first by modification time."""
    try:
        names = os.listdir(save_dir)
    except OSError:
        return []
    paths = [
        os.path.join(save_dir, name)
        for name in names
        if name.endswith(".pth") and not name.startswith(".")
    ]
    paths = [p for p in paths if os.path.isfile(p)]
    return sorted(paths, key=lambda p: (os.path.getmtime(p), p), reverse=True)


def describe_checkpoints(save_dir: str) -> str:
    """``"a.pth (12.0 MiB), b.pth (0 B)"`` for the checkpoint files of ``save_dir``."""
    files = _checkpoint_files(save_dir)
    if not files:
        return "no .pth files"
    return ", ".join(f"{os.path.basename(p)} ({os.path.getsize(p) / 2**20:.1f} MiB)" for p in files)


def resume_candidates(save_dir: str) -> tuple[list[str], str | None]:
    """Checkpoints to try, in order, and what is wrong with ``last_checkpoint`` (None if nothing).

    Returns:
        ``(paths, problem)``: the file named by ``last_checkpoint`` first (when it exists), then
        the other checkpoint files newest first. ``([], None)`` means there is nothing to resume.
    """
    files = _checkpoint_files(save_dir)
    marker = os.path.join(save_dir, LAST_CHECKPOINT)
    if not os.path.exists(marker):
        problem = f"{marker} does not exist" if files else None
        return files, problem
    try:
        with open(marker) as f:
            named = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        return files, f"{marker} cannot be read ({e})"
    if not named:
        return files, f"{marker} is empty"
    path = named if os.path.isabs(named) else os.path.join(save_dir, named)
    if not os.path.isfile(path):
        return files, f"{marker} names {named}, which does not exist"
    return [path] + [p for p in files if os.path.abspath(p) != os.path.abspath(path)], None
