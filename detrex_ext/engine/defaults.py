"""Run setup shared by every entry point: output folder, logging, config dump, seeding, device;
and the default set of event writers."""

from __future__ import annotations

import argparse
import copy
import hashlib
import logging
import os
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from detrex_ext.config import LazyConfig, try_get_key
from detrex_ext.config.serialization import UnsaveableConfigError, config_to_yaml_data
from detrex_ext.utils import comm
from detrex_ext.utils.env import collect_env_info, seed_all_rng
from detrex_ext.utils.file_io import PathManager
from detrex_ext.utils.logger import setup_logger
from detrex_ext.utils.threads import configure_cpu_threads
from detrex_ext.utils.writers import (
    CommonMetricPrinter,
    EventWriter,
    JSONWriter,
    TensorboardXWriter,
    WandbWriter,
)

from .ddp import create_ddp_model

__all__ = [
    "create_ddp_model",  # detectron2's location (defined in .ddp)
    "default_setup",
    "default_writers",
    "resolve_device",
    "resolved_config_data",
    "apply_fast_dev_run",
]

logger = logging.getLogger(__name__)

# loggers that get the run's console and file handlers (with their console abbreviation)
_RUN_LOGGERS = {"detrex_ext": "dx", "detrex_projects": "projects", "fvcore": "fvcore"}


def resolved_config_data(cfg: DictConfig) -> Any:
    """Plain data of ``cfg`` with interpolations resolved and call targets as dotted strings (what
    ``--print-config`` prints and wandb records)."""
    resolved = copy.deepcopy(cfg)
    OmegaConf.resolve(resolved)
    return config_to_yaml_data(resolved)


def resolve_device(cfg: DictConfig) -> str:
    """``train.device``, falling back to ``"cpu"`` (with a warning, and written back into
    ``cfg``) when it names CUDA and CUDA is not available."""
    device = str(try_get_key(cfg, "train.device", default="cuda"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(f"train.device={device!r} but CUDA is not available: using the CPU.")
        device = "cpu"
        if OmegaConf.select(cfg, "train.device") is not None:
            cfg.train.device = device
    return device


def default_setup(cfg: DictConfig, args: argparse.Namespace | None) -> None:
    """Prepare a run (every rank calls it):

    1. create ``train.output_dir`` (rank 0);
    2. log to the console (rank 0) and to ``log.txt`` / ``log.txt.rank{N}``;
    3. log rank, world size, environment, command line and the config file with its sha256
       (a YAML config can name any importable callable: the digest records what was run);
    4. save the config (with command-line overrides) as ``output_dir/config.yaml`` (rank 0);
    5. seed every generator with ``train.seed + rank`` (a fresh seed when negative);
    6. set ``cudnn.benchmark`` from ``train.cudnn_benchmark`` (not for ``--eval-only``);
    7. fall back to the CPU when ``train.device`` is CUDA and there is none;
    8. limit torch's CPU threads to this process's share of the CPUs it may use
       (:func:`~detrex_ext.utils.threads.configure_cpu_threads`; ``OMP_NUM_THREADS`` wins).
    """
    output_dir = try_get_key(cfg, "OUTPUT_DIR", "output_dir", "train.output_dir")
    rank = comm.get_rank()
    if comm.is_main_process() and output_dir:
        PathManager.mkdirs(output_dir)
    comm.synchronize()  # other ranks open their log files in it
    for name, abbrev in _RUN_LOGGERS.items():
        setup_logger(output_dir, distributed_rank=rank, name=name, abbrev_name=abbrev)

    logger.info(f"Rank of current process: {rank}. World size: {comm.get_world_size()}")
    logger.info("Environment info:\n" + collect_env_info())
    logger.info("Command line arguments: " + str(args))
    config_file = getattr(args, "config_file", "") if args is not None else ""
    if config_file:
        with PathManager.open(config_file, "rb") as f:
            content = f.read()
        digest = hashlib.sha256(content).hexdigest()
        logger.info(f"Config file {config_file}: sha256 {digest}")
        text = content.decode("utf-8", errors="replace")
        logger.info(f"Contents of args.config_file={config_file}:\n{text}")

    if comm.is_main_process() and output_dir:
        path = os.path.join(output_dir, "config.yaml")
        try:
            LazyConfig.save(cfg, path)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            logger.info(f"Full config saved to {path} (sha256 {digest})")
        except UnsaveableConfigError as e:
            logger.error(f"config.yaml not written: {e}")

    seed = try_get_key(cfg, "seed", "train.seed", default=-1)
    used_seed = seed_all_rng(None if seed is None or seed < 0 else seed + rank)
    logger.info(f"Seeded python, numpy and torch with {used_seed} (train.seed={seed}).")

    if not (args is not None and getattr(args, "eval_only", False)):
        torch.backends.cudnn.benchmark = bool(
            try_get_key(cfg, "train.cudnn_benchmark", "CUDNN_BENCHMARK", default=False)
        )
    resolve_device(cfg)
    configure_cpu_threads(processes_per_machine=comm.get_local_size())


def apply_fast_dev_run(cfg: DictConfig) -> None:
    """``train.fast_dev_run.enabled``: 20 iterations, evaluation at 10, logging every iteration
    (applied after the config dump, as in detrex)."""
    if try_get_key(cfg, "train.fast_dev_run.enabled", default=False):
        cfg.train.max_iter = 20
        cfg.train.eval_period = 10
        cfg.train.log_period = 1
        logger.info("fast_dev_run: max_iter=20, eval_period=10, log_period=1")


def default_writers(cfg: DictConfig) -> list[EventWriter]:
    """Console printer, ``metrics.json``, TensorBoard (skipped with a warning when tensorboard is
    not installed) and wandb (``train.wandb.enabled``). For the main process only."""
    output_dir = cfg.train.output_dir
    max_iter = cfg.train.max_iter
    PathManager.mkdirs(output_dir)
    writers: list[EventWriter] = [
        CommonMetricPrinter(max_iter),
        JSONWriter(os.path.join(output_dir, "metrics.json")),
    ]
    try:
        writers.append(TensorboardXWriter(output_dir))
    except ImportError as e:
        logger.warning(f"{e}; TensorBoard logging is off.")
    if try_get_key(cfg, "train.wandb.enabled", default=False):
        params = OmegaConf.to_container(cfg.train.wandb.params, resolve=True) or {}
        writers.append(WandbWriter(config=resolved_config_data(cfg), **params))
    return writers
