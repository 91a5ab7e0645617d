"""The README's first command, shortened: the demo config trains Mask DINO on the synthetic shapes
through ``tools/train_net.py``, evaluates it and draws its predictions. A broken training,
evaluation or checkpoint path fails here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from e2e_helpers import final_evaluation, read_metrics, run_train_net
from PIL import Image

pytestmark = pytest.mark.slow

CONFIG = "maskdino_demo_synthetic.py"
ITERATIONS = 30
SHORT = [
    f"train.max_iter={ITERATIONS}",
    "train.log_period=1",
    "train.checkpointer.period=20",
    "train.visualize.num_images=2",
]
# every loss term of Mask DINO: final, 3 decoder layers + the decoder input, query selection,
# and their denoising counterparts
LOSS_GROUPS = ("loss_ce", "loss_mask", "loss_dice", "loss_bbox", "loss_giou")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("demo")
    proc = run_train_net(CONFIG, f"train.output_dir={output_dir}", *SHORT)
    return output_dir, proc


def test_demo_trains_and_reports_box_mask_ap_and_pq(demo_run):
    output_dir, proc = demo_run
    records = read_metrics(output_dir)
    assert [r["iteration"] for r in records if "total_loss" in r] == list(range(ITERATIONS))
    first = records[0]
    for group in LOSS_GROUPS:
        for suffix in ("", "_0", "_2", "_interm", "_dn", "_dn_2"):
            assert math.isfinite(first[group + suffix]), group + suffix
    training = [r for r in records if "total_loss" in r]
    # the sum of ~45 weighted terms drops fast from a random start (~190 -> ~130 in 10 steps)
    assert training[-1]["total_loss"] < 0.85 * training[0]["total_loss"]

    results = final_evaluation(records)
    assert results["iteration"] >= ITERATIONS - 1  # the evaluation after the last iteration
    for key in ("bbox/AP", "bbox/AP50", "segm/AP", "segm/AP50", "panoptic_seg/PQ", "sem_seg/mIoU"):
        assert 0.0 <= results[key] <= 100.0, key
    # the evaluation tables are printed in the console
    assert "copypaste: PQ,SQ,RQ" in proc.stderr + proc.stdout


def test_demo_writes_checkpoints_config_and_a_prediction_picture(demo_run):
    output_dir, _ = demo_run
    assert (output_dir / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert (output_dir / "model_0000019.pth").is_file()
    state = torch.load(output_dir / "model_final.pth", map_location="cpu", weights_only=True)
    # 5 classes (3 things + 2 stuff), hidden width 64
    assert state["model"]["sem_seg_head.predictor.class_embed.weight"].shape == (5, 64)
    assert state["iteration"] == ITERATIONS - 1
    assert (output_dir / "config.yaml").is_file()

    picture = Image.open(output_dir / "predictions" / f"iter_{ITERATIONS:07d}.png")
    # 2 rows (validation images, 128 px shown at 256) x 3 panels (truth, instances, panoptic)
    assert picture.width >= 3 * 256 and 2 * 256 <= picture.height < 3 * 256
    pixels = np.asarray(picture.convert("RGB"))
    assert pixels.std() > 10  # drawn images, not a blank canvas


def _without_timings(records: list[dict]) -> list[dict]:
    """Records without wall-clock values (time, data_time, eta_seconds...)."""
    return [{k: v for k, v in r.items() if "time" not in k and "eta" not in k} for r in records]


def test_demo_is_reproducible(demo_run, tmp_path):
    """A second run with the same seed gives the same losses at every iteration and the same
    evaluation results (CPU; the seed drives the data order and every random draw)."""
    output_dir, _ = demo_run
    run_train_net(CONFIG, f"train.output_dir={tmp_path}", *SHORT, "train.visualize.enabled=False")
    first, second = (
        _without_timings(read_metrics(output_dir)),
        _without_timings(read_metrics(tmp_path)),
    )
    assert second == first
