"""What ``tools/train_net.py`` runs in every process: ``main(args)``, ``do_train``, ``do_test``.

Same flow as detrex's ``train_net.py`` (config schema in the project notes), with these choices:

- the model is evaluated unwrapped (no DDP forward during evaluation, so uneven evaluation shards
  cannot deadlock on buffer broadcasts);
- with EMA, training-time evaluation reports both weights: the raw results under their task names
  and the EMA results under ``<task>_ema`` (detrex overwrote the raw ones);
- an iteration is one optimizer step over ``train.gradient_accumulation_steps`` batches, so
  ``max_iter``, periods and the lr schedule all count optimizer steps;
- ``train.seed`` (or a shared random seed when negative) drives per-iteration reseeding, which
  makes ``--resume`` reproduce an uninterrupted run (see ``train_loop``);
- before anything is built, the config is checked (``config_checks``) and the output folder is
  locked for the run's life (``run_lock``): a second run in the same folder is refused;
- ``--eval-only`` refuses a checkpoint that lacks model tensors or holds tensors of other shapes
  (``train.eval_allow_partial_checkpoint=True`` evaluates it anyway).
"""

from __future__ import annotations

import argparse
import copy
import logging
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from detrex_ext.checkpoint import DetectionCheckpointer
from detrex_ext.checkpoint.detection_checkpoint import resolve_checkpoint_path
from detrex_ext.config import LazyConfig, instantiate, try_get_key
from detrex_ext.evaluation import inference_on_dataset, print_csv_format
from detrex_ext.utils import comm
from detrex_ext.utils.env import derive_seed
from detrex_ext.utils.file_io import is_local_path

from . import ema, hooks
from .config_checks import check_config, check_sections
from .ddp import create_ddp_model, unwrap_model
from .defaults import apply_fast_dev_run, default_setup, default_writers, resolve_device
from .interrupt import report_interruption
from .resumable_loader import build_train_loader
from .run_lock import OutputDirInUseError, OutputDirLock, remove_stale_temporary_files
from .train_loop import Trainer
from .visualize_hook import build_visualize_hook

__all__ = [
    "IncompleteCheckpointError",
    "build_optimizer",
    "do_eval_only",
    "do_test",
    "do_train",
    "load_config",
    "main",
]

logger = logging.getLogger(__name__)


class IncompleteCheckpointError(ValueError):
    """``--eval-only`` was given weights that do not cover the model."""


def _evaluate(cfg: DictConfig, model: nn.Module) -> dict[str, Any]:
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    if comm.is_main_process() and results:
        print_csv_format(results)
    return results


def do_test(cfg: DictConfig, model: nn.Module, eval_only: bool = False) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataloader.test`` with ``dataloader.evaluator`` (both built anew).

    Returns:
        ``{task: {metric: value}}`` on the main process (``{}`` without an evaluator). During
        training with EMA, the EMA weights are evaluated too, under ``<task>_ema``.
    """
    if "evaluator" not in cfg.dataloader or cfg.dataloader.evaluator is None:
        logger.info("No dataloader.evaluator in the config: skipping evaluation.")
        return {}
    model = unwrap_model(model)
    results = _evaluate(cfg, model)
    if not eval_only and try_get_key(cfg, "train.model_ema.enabled", default=False):
        logger.info("Run evaluation with EMA.")
        with ema.apply_model_ema_and_restore(model):
            ema_results = _evaluate(cfg, model)
        results.update({f"{task}_ema": value for task, value in ema_results.items()})
    return results


def build_optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """``instantiate(cfg.optimizer)`` with ``optimizer.params.model = model``.

    The model is set on a copy, so ``cfg`` stays plain data (wandb logs it, it can be saved).
    """
    if OmegaConf.select(cfg, "optimizer.params._target_") is None:
        raise ValueError(
            "cfg.optimizer.params must be a LazyCall that builds parameter groups from the model, "
            "e.g. L(get_default_optimizer_params)() (see configs/common/optim.py)"
        )
    optimizer_cfg = copy.deepcopy(cfg.optimizer)
    optimizer_cfg.params.model = model
    return instantiate(optimizer_cfg)


def clip_grad_params(cfg: DictConfig) -> dict[str, Any] | None:
    """``train.clip_grad.params`` as a plain dict when ``train.clip_grad.enabled``, else None."""
    if not try_get_key(cfg, "train.clip_grad.enabled", default=False):
        return None
    return OmegaConf.to_container(cfg.train.clip_grad.params, resolve=True)


def _maybe_compile(cfg: DictConfig, model: nn.Module) -> None:
    if try_get_key(cfg, "train.compile.enabled", default=False):
        mode = try_get_key(cfg, "train.compile.mode", default=None)
        logger.info(f"torch.compile of the model (mode={mode})")
        model.compile(mode=mode)  # in place: state_dict keys stay the same


def do_train(args: argparse.Namespace, cfg: DictConfig) -> Trainer:
    """Build model, optimizer, loader, trainer, checkpointer and hooks; resume or load weights;
    train to ``train.max_iter``.

    Returns:
        The trainer after training (its hooks, storage and final iteration).
    """
    device = resolve_device(cfg)
    if cfg.train.init_checkpoint and not args.resume:
        resolve_checkpoint_path(cfg.train.init_checkpoint)  # a wrong path fails before the build
    model = instantiate(cfg.model)
    logger.info(f"Model:\n{model}")
    model.to(device)
    optimizer = build_optimizer(cfg, model)
    seed = try_get_key(cfg, "train.seed", default=-1)
    iteration_seed = seed if seed is not None and seed >= 0 else comm.shared_random_seed()
    # data seed for loaders whose config leaves it None (kept in checkpoints, see
    # resumable_loader); train.seed itself stays the seed of the model-side randomness
    train_loader = build_train_loader(cfg.dataloader.train, seed=derive_seed(iteration_seed, 1))
    _maybe_compile(cfg, model)
    ddp_kwargs = OmegaConf.to_container(cfg.train.ddp, resolve=True) if "ddp" in cfg.train else {}
    model = create_ddp_model(model, **ddp_kwargs)
    ema.may_build_model_ema(cfg, model)

    trainer = Trainer(
        model,
        train_loader,
        optimizer,
        amp_enabled=try_get_key(cfg, "train.amp.enabled", default=False),
        amp_dtype=try_get_key(cfg, "train.amp.dtype", default="fp16"),
        clip_grad_params=clip_grad_params(cfg),
        grad_accum_steps=try_get_key(cfg, "train.gradient_accumulation_steps", default=1),
        iteration_seed=iteration_seed,
    )
    checkpointer = DetectionCheckpointer(
        model, cfg.train.output_dir, trainer=trainer, **ema.may_get_ema_checkpointer(cfg, model)
    )
    main_process = comm.is_main_process()
    use_ema = try_get_key(cfg, "train.model_ema.enabled", default=False)
    ema_cfg = cfg.train.model_ema if use_ema else None
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            ema.EMAHook(model, decay=ema_cfg.decay, device=ema_cfg.device) if ema_cfg else None,
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            (
                hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
                if main_process
                else None
            ),
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            # prediction pictures (train.visualize), after the final evaluation
            build_visualize_hook(cfg, model) if main_process else None,
            (
                hooks.PeriodicWriter(default_writers(cfg), period=cfg.train.log_period)
                if main_process
                else None
            ),
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    resumed = checkpointer.resumed_from is not None
    if args.resume and not resumed:
        logger.info(
            f"--resume: no checkpoint in {cfg.train.output_dir}; starting from "
            f"train.init_checkpoint={cfg.train.init_checkpoint!r}"
        )
    start_iter = trainer.iter + 1 if resumed else 0
    if resumed and start_iter >= cfg.train.max_iter:
        logger.info(
            f"Training already finished: {checkpointer.resumed_from} is iteration "
            f"{trainer.iter} of train.max_iter={cfg.train.max_iter}; nothing to train. To train "
            f"longer, raise train.max_iter; to evaluate, run --eval-only "
            f"train.init_checkpoint={checkpointer.resumed_from}"
        )
        return trainer
    if resumed:
        logger.info(f"Resumed from iteration {trainer.iter}; continuing at {start_iter}.")
    with report_interruption(lambda: _log_interruption(trainer, checkpointer)):
        trainer.train(start_iter, cfg.train.max_iter)
    return trainer


def _log_interruption(trainer, checkpointer) -> None:
    last = checkpointer.get_checkpoint_file() if checkpointer.has_checkpoint() else None
    logger.warning(
        f"Interrupted at iteration {trainer.iter}. "
        + (
            f"The last checkpoint is {last}; continue with --resume."
            if last
            else "No checkpoint was written yet."
        )
    )


def do_eval_only(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``train.init_checkpoint`` (EMA weights with
    ``train.model_ema.use_ema_weights_for_eval_only``)."""
    allow_partial = try_get_key(cfg, "train.eval_allow_partial_checkpoint", default=False)
    path = cfg.train.init_checkpoint
    if not path and not allow_partial:
        raise IncompleteCheckpointError(
            "--eval-only needs the weights to evaluate: set train.init_checkpoint=<a checkpoint "
            "of this config> (a path, a URL or a model zoo name). To evaluate the untrained "
            "model, add train.eval_allow_partial_checkpoint=True."
        )
    if path:
        resolve_checkpoint_path(path)  # a wrong path fails before the model is built
    model = instantiate(cfg.model)
    model.to(resolve_device(cfg))
    ema.may_build_model_ema(cfg, model)
    if not path:
        logger.warning("--eval-only without train.init_checkpoint: evaluating untrained weights.")
    checkpointer = DetectionCheckpointer(model, **ema.may_get_ema_checkpointer(cfg, model))
    checkpointer.load(path)
    report = checkpointer.last_load
    if report is not None and not report.complete:
        if not allow_partial:
            raise IncompleteCheckpointError(
                f"{report.summary()}: is it a checkpoint of this config? --eval-only evaluates "
                "complete weights only. To evaluate anyway (the missing tensors keep their "
                "initial values), add train.eval_allow_partial_checkpoint=True."
            )
        logger.warning(f"Evaluating incomplete weights: {report.summary()}.")
    if try_get_key(cfg, "train.model_ema.use_ema_weights_for_eval_only", default=False):
        state = ema.get_model_ema_state(model)
        if not state.has_inited():
            raise ValueError(
                f"use_ema_weights_for_eval_only=True but {cfg.train.init_checkpoint!r} has no "
                "'ema_state'; evaluate its regular weights with "
                "train.model_ema.use_ema_weights_for_eval_only=False"
            )
        logger.info("Evaluating the EMA weights.")
        ema.apply_model_ema(model)
    results = do_test(cfg, model, eval_only=True)
    if comm.is_main_process():
        logger.info(f"Evaluation results: {results}")
        visualizer = build_visualize_hook(cfg, model)
        if visualizer is not None:
            visualizer.write("eval.png")
    return results


def load_config(args: argparse.Namespace) -> DictConfig:
    """The run's config: ``args.config_file`` with ``args.opts`` applied and ``args.output_dir``
    (set by ``--multirun`` for each job) as ``train.output_dir``, checked (``check_config``)."""
    cfg = LazyConfig.load(args.config_file)
    eval_only = bool(getattr(args, "eval_only", False))
    check_sections(cfg, eval_only=eval_only, source=args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts or [])
    if getattr(args, "output_dir", None):
        cfg.train.output_dir = args.output_dir
    check_config(cfg, eval_only=eval_only, source=args.config_file)
    return cfg


def _lock_output_dir(output_dir: str) -> OutputDirLock | None:
    """Rank 0 locks the output folder; every rank raises if that failed."""
    lock, error = None, None
    if comm.is_main_process() and is_local_path(output_dir):  # iopath URLs: no file locks
        lock = OutputDirLock(output_dir)
        try:
            lock.acquire()
        except OutputDirInUseError as e:
            lock, error = None, str(e)
    errors = comm.all_gather(error) if comm.get_world_size() > 1 else [error]
    if errors[0] is not None:
        raise OutputDirInUseError(errors[0])
    return lock


def main(args: argparse.Namespace) -> dict[str, Any] | None:
    """Load and check the config (``load_config``), lock the output folder for the run's life,
    set up the run, then evaluate or train."""
    cfg = load_config(args)
    lock = _lock_output_dir(cfg.train.output_dir)
    try:
        default_setup(cfg, args)
        if lock is not None:
            lock.log_takeover()
            remove_stale_temporary_files(cfg.train.output_dir)
        apply_fast_dev_run(cfg)
        if args.eval_only:
            return do_eval_only(cfg)
        do_train(args, cfg)
        return None
    finally:
        if lock is not None:
            lock.release()
