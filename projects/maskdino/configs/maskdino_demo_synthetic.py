"""Mask DINO demo: trains, evaluates and draws its predictions on a 2-core CPU in about 7 minutes.

    python tools/train_net.py --config-file projects/maskdino/configs/maskdino_demo_synthetic.py

The whole Mask DINO (deformable encoder, two-stage query selection, mask-enhanced anchor boxes,
denoising queries, Hungarian matching, every auxiliary loss) at toy scale: a timm `resnet10t`
trained from scratch (nothing is downloaded), width 64, 2 encoder and 3 decoder layers, 20
queries, 96-pixel inputs, on the built-in synthetic shapes (3 thing + 2 stuff classes, generated
in memory: `configs/common/data/synthetic_shapes.py`). After 1500 iterations it evaluates box AP,
mask AP, PQ and mIoU on the 64 validation images and writes `predictions/iter_0001500.png`
(ground truth, instances, panoptic) into `train.output_dir`.

Seeded: two runs with the same thread count give the same metrics. `train.device=cuda` runs it
on a GPU.
"""

from detrex_ext.config import LazyCall as L
from detrex_ext.config import get_config
from detrex_ext.layers import ShapeSpec
from detrex_ext.modeling import TimmBackbone
from detrex_ext.solver.lr_schedule_configs import multistep_lr_scheduler

from .models.maskdino_r50 import model

dataloader = get_config("common/data/synthetic_shapes.py").dataloader

# ---------------------------------------------------------------- model
model.num_classes = 5  # circle, square, triangle (things), sky, ground (stuff)
model.num_queries = 20  # at most 6 objects + 2 stuff regions per image
model.metadata = "${dataloader.train.dataset.names}"
model.backbone = L(TimmBackbone)(
    model_name="resnet10t",
    pretrained=False,
    out_features=["res2", "res3", "res4", "res5"],
    norm="BN",  # trained batch norm: the backbone starts from random weights
)
_pixel_decoder = model.sem_seg_head.pixel_decoder
_pixel_decoder.input_shape = {  # resnet10t's feature maps
    "res2": L(ShapeSpec)(channels=64, stride=4),
    "res3": L(ShapeSpec)(channels=128, stride=8),
    "res4": L(ShapeSpec)(channels=256, stride=16),
    "res5": L(ShapeSpec)(channels=512, stride=32),
}
_pixel_decoder.conv_dim = 64  # a multiple of 32 (GroupNorm)
_pixel_decoder.mask_dim = 64
_pixel_decoder.transformer_enc_layers = 2
_pixel_decoder.transformer_dim_feedforward = 256
_pixel_decoder.transformer_nheads = 4
_decoder = model.sem_seg_head.transformer_predictor
_decoder.hidden_dim = 64
_decoder.nheads = 4
_decoder.dim_feedforward = 256
_decoder.dec_layers = 3
_decoder.dn_num = 20  # 2 denoising groups for 8 targets
model.criterion.num_points = 256  # of the 24 x 24 predicted masks
model.criterion.num_thing_classes = 3
model.semantic_on = True
model.instance_on = True
model.panoptic_on = True
model.test_topk_per_image = 20

# ---------------------------------------------------------------- data
# the 128 x 128 images are trained (LSJ, scale 0.5..1.5) and evaluated at 96 pixels; outputs
# are resized back to 128 for evaluation
dataloader.train.mapper.image_size = 96
dataloader.train.total_batch_size = 8
dataloader.test.mapper.augmentations[0].short_edge_length = 96
for _evaluator in dataloader.evaluator.evaluators:
    _evaluator.output_dir = "${train.output_dir}/inference"

# ---------------------------------------------------------------- schedule
train = get_config("common/train.py").train
train.output_dir = "./output/maskdino_demo_synthetic"
train.device = "cpu"
train.seed = 0
train.max_iter = 1500
train.eval_period = 0  # evaluate once, after training
train.log_period = 50
train.checkpointer = dict(period=500, max_to_keep=2)
train.visualize = dict(enabled=True, num_images=6, score_threshold=0.5, period=0)

optimizer = get_config("common/optim.py").AdamW
optimizer.lr = 2e-3
optimizer.weight_decay = 0.05
optimizer.params.weight_decay_norm = 0.0
optimizer.params.weight_decay_embed = 0.0
optimizer.fused = True  # one kernel for all ~190 parameters (a third of the for-loop step on CPU)

lr_multiplier = multistep_lr_scheduler(
    values=[1.0, 0.1], milestones=[1200], warmup_steps=50, warmup_factor=0.01
)
