"""Training defaults (the detrex ``train`` dict), read by ``tools/train_net.py``.

Use it in an experiment config as::

    from detrex_ext.config import get_config
    train = get_config("common/train.py").train
    train.max_iter = 368750

Derived values should be interpolations (``"${train.output_dir}/eval"``), not Python arithmetic,
so that they follow command-line overrides.
"""

train = dict(
    # Directory for logs, config.yaml, checkpoints, metrics.json and tensorboard events.
    output_dir="./output",
    # Weights loaded before training when not resuming, and evaluated by --eval-only: a local path,
    # an http(s) URL or a model zoo name ("" = start from the model's own initialisation).
    init_checkpoint="",
    # --eval-only refuses weights that lack model tensors or have tensors of other shapes (a
    # checkpoint of another config); True evaluates them anyway.
    eval_allow_partial_checkpoint=False,
    max_iter=90000,
    # Mixed precision: dtype "bf16" (no loss scaling needed) or "fp16" (with a GradScaler).
    amp=dict(enabled=False, dtype="bf16"),
    # Arguments of DistributedDataParallel (and fp16 gradient compression for multi-node runs).
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    # Checkpoint every `period` iterations, keeping the newest `max_to_keep` files.
    checkpointer=dict(period=5000, max_to_keep=100),
    # Evaluate every `eval_period` iterations (0: only after the last iteration).
    eval_period=5000,
    log_period=20,
    # Device of the model. The launcher falls back to "cpu" with a warning when CUDA is not
    # available, so the same config runs on a laptop and on a GPU node.
    device="cuda",
    # Gradient clipping by total norm over all parameters (clip_grad_norm_), after AMP unscaling.
    clip_grad=dict(enabled=False, params=dict(max_norm=0.1, norm_type=2)),
    # Exponential moving average of the weights. device "" = the model's device.
    model_ema=dict(enabled=False, decay=0.999, device="", use_ema_weights_for_eval_only=False),
    # Negative: a random seed per run (logged); otherwise seed + rank.
    seed=-1,
    # A smoke test: 20 iterations, evaluation at 10, logging every iteration.
    fast_dev_run=dict(enabled=False),
    wandb=dict(
        enabled=False,
        params=dict(
            dir="${train.output_dir}/wandb",
            project="detrex_ext",
            name="experiment",
            mode="online",  # "online", "offline" or "disabled"
        ),
    ),
    # torch.backends.cudnn.benchmark for training (not applied to --eval-only runs).
    cudnn_benchmark=False,
    # Gradient accumulation: one iteration is one optimizer step over N batches of
    # dataloader.train.total_batch_size images (effective batch = N * total_batch_size); max_iter,
    # the checkpoint/eval/log periods and the lr schedule all count optimizer steps.
    gradient_accumulation_steps=1,
    # torch.compile the model before training (mode: None, "reduce-overhead", "max-autotune").
    compile=dict(enabled=False, mode=None),
)
