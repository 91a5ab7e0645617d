#!/usr/bin/env python
"""Train or evaluate any lazy config, detrex style.

    python tools/train_net.py --config-file projects/maskdino/configs/<cfg>.py --num-gpus 8
    python tools/train_net.py --config-file <cfg>.py --resume
    python tools/train_net.py --config-file <cfg>.py --eval-only train.init_checkpoint=<ckpt>
    python tools/train_net.py --config-file <cfg>.py --print-config optimizer.lr=1e-4
    python tools/train_net.py --config-file <cfg>.py --multirun optimizer.lr=1e-4,2e-4

Every process runs ``detrex_ext.engine.runner.main``; see ``--help`` for all flags.
"""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning when the machine is busy at start (see
# detrex_ext.utils.openmp); only takes effect before torch is loaded. torch-free import.
from detrex_ext.utils.openmp import set_wait_policy_for_load  # noqa: E402

set_wait_policy_for_load()

# Freed memory stays in the heap for the next step instead of being unmapped and page-faulted in
# again (see detrex_ext.utils.malloc); malloc variables the user set win. torch-free import.
from detrex_ext.utils.malloc import keep_freed_memory  # noqa: E402

keep_freed_memory()

import argparse
import copy
import sys

import yaml

from detrex_ext.checkpoint import NotACheckpointError
from detrex_ext.checkpoint.detection_checkpoint import CheckpointSaveError
from detrex_ext.checkpoint.resume import ResumeError
from detrex_ext.config import ConfigOverrideError, InstantiationError, LazyConfig
from detrex_ext.data.datasets.coco_checks import COCOFormatError
from detrex_ext.engine import default_argument_parser, launch
from detrex_ext.engine.config_checks import InvalidConfigError
from detrex_ext.engine.defaults import resolved_config_data
from detrex_ext.engine.multirun import expand_sweep, find_sweep_overrides
from detrex_ext.engine.run_lock import OutputDirInUseError, OutputDirLock
from detrex_ext.engine.runner import IncompleteCheckpointError, load_config, main
from detrex_ext.utils.image_io import UnreadableImageError

# errors whose message says what to fix: printed as one line, without a traceback
_REPORTED_ERRORS = (
    CheckpointSaveError,
    COCOFormatError,
    ConfigOverrideError,
    FileNotFoundError,
    IncompleteCheckpointError,
    InvalidConfigError,
    NotACheckpointError,
    OutputDirInUseError,
    ResumeError,
    UnreadableImageError,
)


def _is_reported(error: BaseException) -> bool:
    """A known error, or a config node that failed to build because of one."""
    while isinstance(error, InstantiationError) and error.__cause__ is not None:
        error = error.__cause__
    return isinstance(error, _REPORTED_ERRORS)


def print_config(args: argparse.Namespace) -> None:
    """Print the config after overrides, interpolations resolved, as YAML."""
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts or [])
    text = yaml.safe_dump(resolved_config_data(cfg), sort_keys=False, default_flow_style=False)
    sys.stdout.write(text)


def run_sweep(args: argparse.Namespace) -> None:
    """Run every combination of the sweep overrides in turn, each in its own output folder."""
    jobs = expand_sweep(args.opts or [])
    cfg = LazyConfig.load(args.config_file)
    # the base folder comes from the config with the fixed (non-sweep) overrides applied
    fixed = [o for o in args.opts or [] if o not in set(find_sweep_overrides(args.opts or []))]
    base_dir = LazyConfig.apply_overrides(cfg, fixed).train.output_dir
    print(f"[multirun] {len(jobs)} job(s) under {base_dir}", flush=True)
    all_args = []
    for job in jobs:  # every job's config and folder checked before the first one runs
        job_args = copy.copy(args)
        job_args.opts = job.overrides
        job_args.output_dir = os.path.join(base_dir, job.dirname) if job.dirname else None
        OutputDirLock(load_config(job_args).train.output_dir).check_free()
        all_args.append(job_args)
    for index, (job, job_args) in enumerate(zip(jobs, all_args)):
        swept = " ".join(f"{k}={v}" for k, v in job.swept)
        print(f"[multirun] job {index}: {swept} -> {job_args.output_dir}", flush=True)
        launch_main(job_args)


def launch_main(args: argparse.Namespace) -> None:
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


def run(args: argparse.Namespace) -> None:
    if args.print_config:
        print_config(args)
        return
    if args.multirun:
        run_sweep(args)
        return
    sweeps = find_sweep_overrides(args.opts or [])
    if sweeps:
        raise SystemExit(
            f"train_net.py: {' '.join(sweeps)} list several values; add --multirun to run one "
            "job per combination (or quote a string containing commas: key='a,b')"
        )
    load_config(args)  # bad overrides and values stop here, before any process starts
    launch_main(args)


def cli(argv: list[str] | None = None) -> None:
    args = default_argument_parser().parse_args(argv)
    if not args.config_file:
        raise SystemExit("train_net.py: --config-file is required")
    try:
        run(args)
    except KeyboardInterrupt:
        print("train_net.py: interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        if not _is_reported(e):
            raise
        print(f"train_net.py: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
