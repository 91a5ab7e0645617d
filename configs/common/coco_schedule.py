"""COCO learning-rate schedules (detrex names), with milestones in absolute iterations.

Every schedule reads ``train.max_iter`` through an interpolation, so a drop at iteration 300000
stays at iteration 300000 when ``train.max_iter`` is overridden (fvcore's scale-invariant
milestones would move it). Set ``train.max_iter`` to the length a schedule is meant for:

- ``lr_multiplier_1x`` ... ``_9x``: N x 90k iterations at batch 16; x0.1 at 60k*N and 80k*N (up to
  2x), or 60k and 20k iterations before the end (3x and longer); 1000 warmup iterations from 0.001.
- ``lr_multiplier_12ep`` ... ``_50ep``: 7500 iterations per epoch at batch 16; x0.1 at the decay
  epoch (11, 20, 30, 40); no warmup. The ``_warmup`` variants warm up for 1e-3 epochs (8 iterations).
"""

from detrex_ext.solver.lr_schedule_configs import multistep_lr_scheduler

ITERS_PER_EPOCH_BS16 = 7500  # 118k COCO train images / 16 images per batch, rounded


def default_X_scheduler(num_X):
    """The detectron2 "Nx" schedule: N * 90k iterations at batch size 16."""
    total = num_X * 90000
    if num_X <= 2:
        milestones = [60000 * num_X, 80000 * num_X]
    else:
        milestones = [total - 60000, total - 20000]
    return multistep_lr_scheduler(
        values=[1.0, 0.1, 0.01], milestones=milestones, warmup_steps=1000, warmup_factor=0.001
    )


def default_coco_scheduler(epochs=50, decay_epochs=40, warmup_epochs=0):
    """One x0.1 drop at ``decay_epochs``; ``train.max_iter`` should be ``epochs * 7500``."""
    return multistep_lr_scheduler(
        values=[1.0, 0.1],
        milestones=[decay_epochs * ITERS_PER_EPOCH_BS16],
        warmup_steps=round(warmup_epochs * ITERS_PER_EPOCH_BS16),
        warmup_factor=0.001,
    )


lr_multiplier_1x = default_X_scheduler(1)
lr_multiplier_2x = default_X_scheduler(2)
lr_multiplier_3x = default_X_scheduler(3)
lr_multiplier_6x = default_X_scheduler(6)
lr_multiplier_9x = default_X_scheduler(9)

lr_multiplier_50ep = default_coco_scheduler(50, 40, 0)
lr_multiplier_36ep = default_coco_scheduler(36, 30, 0)
lr_multiplier_24ep = default_coco_scheduler(24, 20, 0)
lr_multiplier_12ep = default_coco_scheduler(12, 11, 0)

lr_multiplier_50ep_warmup = default_coco_scheduler(50, 40, 1e-3)
lr_multiplier_12ep_warmup = default_coco_scheduler(12, 11, 1e-3)
