"""tools/benchmark.py on CPU at tiny size, and the forward / post-processing split."""

from __future__ import annotations

import json
import math
import time

import torch
from tool_helpers import TINY_CONFIG, load_tool

benchmark = load_tool("benchmark")


class _SleepyNet(torch.nn.Linear):
    def forward(self, x):
        time.sleep(0.02)
        return super().forward(x)


class _SleepyModel(torch.nn.Module):
    """20 ms in a parameter-holding child (the network), then 10 ms of "post-processing"."""

    def __init__(self):
        super().__init__()
        self.net = _SleepyNet(1, 1)

    def forward(self, batched_inputs):
        self.net(torch.zeros(1, 1))
        time.sleep(0.01)
        return [{} for _ in batched_inputs]


def test_network_time_is_separated_from_post_processing():
    model = _SleepyModel()
    predictor = benchmark.Predictor(model)
    image = benchmark.synthetic_image(32, 48)
    result = benchmark.benchmark_inference(predictor, image, warmup=1, repeats=3)
    assert result["network_modules"] == ["net"]
    forward, post, call = (
        result[k]["median_ms"] for k in ("model_forward", "post_processing", "model_call")
    )
    assert forward >= 20 and post >= 10
    assert call >= 30  # each run: call = forward + post (medians do not add up exactly)
    assert result["end_to_end"]["median_ms"] >= 30
    assert result["model_call"]["runs"] == 3


def test_synthetic_training_batch_is_consistent():
    batch = benchmark.synthetic_training_batch(2, 64, num_classes=5)
    for sample in batch:
        instances = sample["instances"]
        assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.uint8
        masks, boxes = instances.gt_masks, instances.gt_boxes.tensor
        for mask, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist()):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        assert instances.gt_classes.max() < 5
        labelled = sample["sem_seg"] != 255
        assert torch.equal(labelled, masks.any(0))


def test_cli_prints_the_latency_table_on_cpu(tmp_path, tiny_weights, capsys):
    output = tmp_path / "bench.json"
    argv = ["--config-file", str(TINY_CONFIG), "--weights", str(tiny_weights), "--device", "cpu"]
    argv += ["--height", "64", "--width", "96", "--train-batch", "2", "--train-size", "64"]
    argv += ["--warmup", "1", "--repeats", "3", "--output", str(output)]
    assert benchmark.main(argv) == 0
    printed = capsys.readouterr().out
    for stage in (
        "model forward (pixel_scorer)",
        "post-processing",
        "end-to-end",
        "training step, batch 2 @ 64x64",
    ):
        assert stage in printed
    results = json.loads(output.read_text())
    assert results["parameters"] == 4 and results["device"] == "cpu"
    inference = results["inference"]
    assert inference["model_forward"]["median_ms"] <= inference["model_call"]["median_ms"]
    assert results["training"]["batch_size"] == 2 and math.isfinite(
        results["training"]["last_loss"]
    )
    assert results["training"]["peak_memory_mib"] > 0
