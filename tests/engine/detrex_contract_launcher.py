"""A small launcher written to detrex's contract (what detrex's ``tools/train_net.py`` does with a
config, as the README's "Coming from detectron2/detrex" section describes), on this project's
names: CI runs our configs through it because it cannot install detectron2 and detrex.

The contract: the config has ``model``, ``optimizer`` (its ``params.model`` is set here, after the
config was saved by ``default_setup``), ``lr_multiplier``, ``dataloader.{train,test,evaluator}``
and ``train.*``. Training subclasses ``SimpleTrainer`` the way detrex's ``Trainer`` does (AMP and
gradient clipping written into ``run_step``, metrics through ``_write_metrics``); the hooks are
detrex's, in detrex's order; ``--eval-only`` loads ``train.init_checkpoint`` and evaluates.
Unlike detrex's script it does not assert CUDA (the one line the README's workaround removes).

    python tests/engine/detrex_contract_launcher.py --config-file CONFIG [--eval-only] key=value...
"""

from __future__ import annotations

import json
import logging
import os
import time

import torch

from detrex_ext.checkpoint import DetectionCheckpointer
from detrex_ext.config import LazyConfig, instantiate
from detrex_ext.engine import (
    SimpleTrainer,
    default_argument_parser,
    default_setup,
    hooks,
    launch,
)
from detrex_ext.engine.defaults import create_ddp_model
from detrex_ext.evaluation import inference_on_dataset, print_csv_format
from detrex_ext.utils import comm
from detrex_ext.utils.events import CommonMetricPrinter, JSONWriter
from detrex_ext.utils.file_io import PathManager

logger = logging.getLogger("detrex_contract_launcher")


class Trainer(SimpleTrainer):
    """detrex's trainer shape: ``SimpleTrainer`` plus AMP and gradient clipping."""

    def __init__(self, model, dataloader, optimizer, amp=False, clip_grad_params=None):
        super().__init__(model=model, data_loader=dataloader, optimizer=optimizer)
        self.amp = amp
        self.device_type = next(model.parameters()).device.type
        self.grad_scaler = torch.amp.GradScaler(self.device_type) if amp else None
        self.clip_grad_params = clip_grad_params

    def run_step(self):
        assert self.model.training, "[Trainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.autocast(self.device_type, enabled=self.amp):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses, loss_dict = loss_dict, {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        if self.amp:
            self.grad_scaler.scale(losses).backward()
            if self.clip_grad_params is not None:
                self.grad_scaler.unscale_(self.optimizer)
                self.clip_grads(self.model.parameters())
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            losses.backward()
            if self.clip_grad_params is not None:
                self.clip_grads(self.model.parameters())
            self.optimizer.step()
        self._write_metrics(loss_dict, data_time)

    def clip_grads(self, params):
        params = [p for p in params if p.requires_grad and p.grad is not None]
        if params:
            torch.nn.utils.clip_grad_norm_(parameters=params, **self.clip_grad_params)


def do_test(cfg, model):
    if "evaluator" not in cfg.dataloader:
        return {}
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    print_csv_format(results)
    return results


def do_train(args, cfg):
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model  # the launcher's job: not in the config
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    model = create_ddp_model(model, **cfg.train.ddp)
    assert not cfg.train.model_ema.enabled, "this launcher does not implement EMA"
    trainer = Trainer(
        model=model,
        dataloader=train_loader,
        optimizer=optimizer,
        amp=cfg.train.amp.enabled,
        clip_grad_params=cfg.train.clip_grad.params if cfg.train.clip_grad.enabled else None,
    )
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    writers = []
    if comm.is_main_process():
        PathManager.mkdirs(cfg.train.output_dir)
        writers = [
            CommonMetricPrinter(cfg.train.max_iter),
            JSONWriter(os.path.join(cfg.train.output_dir, "metrics.json")),
        ]
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
            if comm.is_main_process()
            else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            hooks.PeriodicWriter(writers, period=cfg.train.log_period)
            if comm.is_main_process()
            else None,
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)


def main(args):
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    default_setup(cfg, args)
    if cfg.train.fast_dev_run.enabled:
        cfg.train.max_iter, cfg.train.eval_period, cfg.train.log_period = 20, 10, 1
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = create_ddp_model(model)
        DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
        results = do_test(cfg, model)
        print("results: " + json.dumps(results, sort_keys=True), flush=True)
    else:
        do_train(args, cfg)


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
