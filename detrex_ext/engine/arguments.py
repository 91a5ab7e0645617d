"""``default_argument_parser``: detrex's ``train_net.py`` command line, plus ``--print-config`` and
``--multirun``."""

from __future__ import annotations

import argparse
import sys

from .launch import default_dist_url

__all__ = ["default_argument_parser"]

_EPILOG = """Examples:

Train on 8 GPUs:
    $ {prog} --config-file cfg.py --num-gpus 8

Change config values on the command line (LazyConfig key=value overrides):
    $ {prog} --config-file cfg.py train.max_iter=1000 optimizer.lr=1e-4

Resume from output_dir/last_checkpoint:
    $ {prog} --config-file cfg.py --resume

Evaluate trained weights:
    $ {prog} --config-file cfg.py --eval-only train.init_checkpoint=/path/to/model.pth

Print the resolved config and exit:
    $ {prog} --config-file cfg.py --print-config optimizer.lr=1e-4

Sweep: one run per combination, each in its own folder under train.output_dir:
    $ {prog} --config-file cfg.py --multirun optimizer.lr=1e-4,2e-4 train.seed=1,2

Multiple machines (run on each machine with its rank):
    (machine0)$ {prog} --machine-rank 0 --num-machines 2 --dist-url tcp://<ip>:<port> ...
    (machine1)$ {prog} --machine-rank 1 --num-machines 2 --dist-url tcp://<ip>:<port> ...

torchrun and Slurm (srun, one task per GPU) are detected from their environment variables.
"""


class _LauncherArgumentParser(argparse.ArgumentParser):
    """Accepts flags after the overrides too (``cfg.py a=1 --resume``): detectron2's parser would
    take ``--resume`` for an override and fail on it."""

    def parse_args(self, args=None, namespace=None):  # noqa: D102 - argparse API
        return self.parse_intermixed_args(args, namespace)


def default_argument_parser(epilog: str | None = None) -> argparse.ArgumentParser:
    """The launcher's parser: ``--config-file``, ``--resume``, ``--eval-only``, ``--num-gpus``,
    ``--num-machines``, ``--machine-rank``, ``--dist-url``, ``--print-config``, ``--multirun``
    and the trailing ``key=value`` overrides (``opts``)."""
    prog = sys.argv[0] if sys.argv and sys.argv[0] else "train_net.py"
    parser = _LauncherArgumentParser(
        epilog=epilog or _EPILOG.format(prog=prog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="resume from train.output_dir/last_checkpoint if it exists (model, optimizer, "
        "scheduler, grad scaler, EMA, iteration); otherwise start from train.init_checkpoint",
    )
    parser.add_argument(
        "--eval-only", action="store_true", help="only evaluate train.init_checkpoint"
    )
    parser.add_argument(
        "--num-gpus",
        type=int,
        default=1,
        help="processes per machine: one per GPU, or CPU processes (gloo) without CUDA",
    )
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument(
        "--machine-rank", type=int, default=0, help="the rank of this machine (unique per machine)"
    )
    parser.add_argument(
        "--dist-url",
        default=default_dist_url(),
        help="initialization URL for pytorch distributed backend ('auto': a free local port). "
        "See https://pytorch.org/docs/stable/distributed.html for details.",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the config after overrides (interpolations resolved) and exit",
    )
    parser.add_argument(
        "--multirun",
        "-m",
        action="store_true",
        help="expand sweep overrides (a=1,2 b=range(0,3)) and run every combination in turn, "
        "each in train.output_dir/<overrides>",
    )
    parser.add_argument(
        "opts",
        help="Modify config options at the end of the command, as 'path.key=value' pairs "
        "(hydra override grammar).",
        default=[],
        nargs="*",
    )
    return parser
