"""setup_logger (per-rank files, re-setup, tqdm coexistence), seeding helpers, environment
report and atomic_write."""

from __future__ import annotations

import io
import logging
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from tqdm import tqdm

from detrex_ext.utils.env import collect_env_info, derive_seed, seed_all_rng
from detrex_ext.utils.file_io import atomic_write
from detrex_ext.utils.logger import setup_logger


@pytest.fixture
def logger_name():
    """A logger private to the test; its handlers are closed afterwards."""
    name = f"dx_test_{os.getpid()}_{random.random():.8f}"
    yield name
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def test_rank_zero_logs_to_console_and_file_other_ranks_to_their_own_file(
    tmp_path: Path, logger_name: str
) -> None:
    stream = io.StringIO()
    logger = setup_logger(str(tmp_path), 0, name=logger_name, abbrev_name="t", stream=stream)
    logger.info("hello from rank 0")
    logger.debug("details for the file only")
    assert "hello from rank 0" in stream.getvalue()
    assert "details" not in stream.getvalue()
    assert "details for the file only" in (tmp_path / "log.txt").read_text()

    rank1 = setup_logger(str(tmp_path), 1, name=logger_name + ".r1", stream=stream)
    before = stream.getvalue()
    rank1.info("hello from rank 1")
    assert stream.getvalue() == before  # no console output on rank 1
    assert "hello from rank 1" in (tmp_path / "log.txt.rank1").read_text()
    for handler in list(rank1.handlers):
        rank1.removeHandler(handler)
        handler.close()


def test_setup_again_replaces_handlers(tmp_path: Path, logger_name: str) -> None:
    stream = io.StringIO()
    setup_logger(str(tmp_path / "a"), 0, name=logger_name, stream=stream)
    logger = setup_logger(str(tmp_path / "b"), 0, name=logger_name, stream=stream)
    logger.info("once")
    assert stream.getvalue().count("once") == 1
    assert "once" in (tmp_path / "b" / "log.txt").read_text()
    assert "once" not in (tmp_path / "a" / "log.txt").read_text()


def test_log_lines_and_an_active_progress_bar_do_not_mix(logger_name: str) -> None:
    stream = io.StringIO()
    logger = setup_logger(None, 0, name=logger_name, stream=stream)
    with tqdm(total=10, file=stream, desc="inference", ncols=60, mininterval=0) as bar:
        bar.update(3)
        logger.info("checkpoint saved")
        bar.update(3)
    text = stream.getvalue()
    # the bar is cleared before the message, so the message starts its own line
    line = next(part for part in text.split("\n") if "checkpoint saved" in part)
    segments = line.split("\r")
    assert segments[-1].startswith("[") and segments[-1].endswith("checkpoint saved")
    assert segments[-2].strip() == ""  # the bar was blanked out first
    assert "6/10" in text.split("checkpoint saved", 1)[1]  # and it is redrawn afterwards


def test_derive_seed_is_deterministic_and_separates_neighbours() -> None:
    assert derive_seed(42, 0, 7) == derive_seed(42, 0, 7)
    seeds = {derive_seed(42, rank, it) for rank in range(4) for it in range(50)}
    assert len(seeds) == 200
    # rank 1 at iteration 0 must not replay rank 0 at iteration 1 (seed + rank + iter would)
    assert derive_seed(42, 1, 0) != derive_seed(42, 0, 1)
    assert all(0 <= s < 2**63 for s in seeds)


def test_seed_all_rng_reproduces_every_generator() -> None:
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    used = seed_all_rng(1234)
    first = draw()
    seed_all_rng(used)
    assert draw() == first
    assert os.environ["PYTHONHASHSEED"] == "1234"
    fresh = seed_all_rng(None)
    assert 0 <= fresh < 2**31 and os.environ["PYTHONHASHSEED"] == str(fresh)


def test_env_info_names_versions() -> None:
    info = collect_env_info()
    assert torch.__version__ in info and "CUDA available" in info and "fvcore" in info


def test_atomic_write_replaces_or_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "last_checkpoint"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(str(path), "w") as f:
            f.write("half")
            raise RuntimeError("crash")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["last_checkpoint"]
    with atomic_write(str(path), "w") as f:
        f.write("new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["last_checkpoint"]
