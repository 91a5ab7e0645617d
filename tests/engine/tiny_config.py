"""A tiny lazy config for the launcher tests (CPU, seconds):

python tools/train_net.py --config-file tests/engine/tiny_config.py train.max_iter=20
"""

import os
import sys

import torch

from detrex_ext.config import LazyCall as L
from detrex_ext.config import get_config
from detrex_ext.solver import (
    IterationMultiStepParamScheduler,
    WarmupParamScheduler,
    get_default_optimizer_params,
)

# The tiny model and data live next to this file; instantiate() imports them by module name, so
# this folder must be importable (also in the processes launch() spawns, which reload the config).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_tiny_task import (  # noqa: E402
    TinyEvaluator,
    TinyRegressor,
    TinyTestLoader,
    TinyTrainLoader,
)

train = get_config("common/train.py").train
train.output_dir = "./output/tiny"
train.device = "cpu"
train.max_iter = 20
train.seed = 42
train.log_period = 1
train.eval_period = 10
train.checkpointer = dict(period=5, max_to_keep=100)
train.model_ema = dict(enabled=True, decay=0.9, device="", use_ema_weights_for_eval_only=False)
train.clip_grad = dict(enabled=True, params=dict(max_norm=1.0, norm_type=2))

model = L(TinyRegressor)(hidden=16, dropout=0.1, step_sleep=0.0)

optimizer = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(weight_decay_norm=0.0),
    lr=0.02,
    betas=(0.9, 0.999),
    weight_decay=0.01,
)

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(IterationMultiStepParamScheduler)(
        values=[1.0, 0.1], milestones=[15], num_updates="${train.max_iter}"
    ),
    warmup_length=0.1,
    warmup_factor=0.1,
)

dataloader = dict(
    train=L(TinyTrainLoader)(num_samples=64, batch_size=4, seed="${train.seed}"),
    test=L(TinyTestLoader)(num_samples=10, batch_size=2),
    evaluator=L(TinyEvaluator)(),
)
