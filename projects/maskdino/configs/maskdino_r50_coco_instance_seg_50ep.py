"""Mask DINO R50, COCO instance segmentation, 50 epochs: the reference model.

Released: mask AP 46.3, box AP 51.7 (52.1M parameters). Official config:
`configs/coco/instance-segmentation/maskdino_R50_bs16_50ep_3s_dowsample1_2048.yaml`.

Recipe: batch 16 (4 GPUs in the paper), AdamW lr 1e-4, weight decay 0.05 (0 for norms and
embeddings), backbone lr x0.1, gradient clipping at total L2 norm 0.01, fp16 AMP, 368,750
iterations with x0.1 at 327,778 and 355,092 (warm-up 10 iterations at factor 1.0: a no-op).
"""

from detrex_ext.config import LazyCall as L
from detrex_ext.config import get_config
from detrex_ext.solver import ModuleNameLrFactor
from detrex_ext.solver.lr_schedule_configs import multistep_lr_scheduler

from .data.coco_instance_lsj import dataloader
from .models.maskdino_r50 import model

train = get_config("common/train.py").train
train.max_iter = 368750
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
train.output_dir = "./output/maskdino_r50_coco_instance_seg_50ep"
train.amp.enabled = True
train.amp.dtype = "fp16"
train.clip_grad.enabled = True
train.clip_grad.params.max_norm = 0.01
train.clip_grad.params.norm_type = 2.0
train.checkpointer.period = 5000
train.eval_period = 5000
train.log_period = 20
train.device = "cuda"

optimizer = get_config("common/optim.py").AdamW
optimizer.lr = 1e-4
optimizer.betas = (0.9, 0.999)
optimizer.weight_decay = 0.05
optimizer.params.weight_decay_norm = 0.0
optimizer.params.weight_decay_embed = 0.0
optimizer.params.zero_weight_decay_names = ["relative_position_bias_table", "absolute_pos_embed"]
optimizer.params.lr_factor_func = L(ModuleNameLrFactor)(patterns={"backbone": 0.1})

lr_multiplier = multistep_lr_scheduler(
    values=[1.0, 0.1, 0.01],
    milestones=[327778, 355092],
    warmup_steps=10,
    warmup_factor=1.0,
)

# The class count comes from model.num_classes; the metadata names the training dataset.
model.metadata = "${dataloader.train.dataset.names}"
dataloader.train.total_batch_size = 16
dataloader.evaluator.output_dir = "${train.output_dir}/inference"
