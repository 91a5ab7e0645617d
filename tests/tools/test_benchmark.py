"""tools/benchmark.py on CPU at tiny size: the inference and training-step splits, the synthetic
training recipe, several precisions in one run, and the comparison with the official figures."""

from __future__ import annotations

import contextlib
import json
import math
import time

import pytest
import torch
from tool_helpers import TINY_CONFIG, load_tool

from detrex_ext.structures import Boxes, Instances

benchmark = load_tool("benchmark")

R50_INSTANCE = "maskdino_r50_coco_instance_seg_50ep"


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


def test_compute_only_is_separated_from_post_processing():
    predictor = benchmark.Predictor(_SleepyModel())
    image = benchmark.synthetic_image(32, 48)
    result = benchmark.benchmark_inference(predictor, image, warmup=1, repeats=3)
    assert result["network_modules"] == ["net"]
    forward, post, call = (
        result[k]["median_ms"] for k in ("compute_only", "post_processing", "model_call")
    )
    assert 20 <= forward < 30 and post >= 10
    assert call >= 30  # each run: call = forward + post (medians do not add up exactly)
    assert result["end_to_end"]["median_ms"] >= 30
    assert result["end_to_end_from_file"]["median_ms"] >= 30
    assert result["model_call"]["runs"] == 3


class _SlowBackward(torch.autograd.Function):
    """Identity whose backward takes 20 ms."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        time.sleep(0.02)
        return grad


class _SleepyTrainingModel(torch.nn.Module):
    """Forward 30 ms, backward 20 ms; loss 10 * sum(weight), so the gradient norm is 10 * sqrt(3).
    Records the instance count of every image it is given."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))
        self.seen_counts: list[list[int]] = []

    def forward(self, batched_inputs):
        self.seen_counts.append([len(x["instances"]) for x in batched_inputs])
        time.sleep(0.03)
        return {"loss": 10 * _SlowBackward.apply(self.weight).sum()}


class _SleepySGD(torch.optim.SGD):
    """An optimizer step of 10 ms."""

    def step(self, closure=None):
        time.sleep(0.01)
        return super().step(closure)


def test_training_split_attributes_each_phase_and_the_trainer_clips():
    model = _SleepyTrainingModel()
    optimizer = _SleepySGD(model.parameters(), lr=0.1)
    batch = benchmark.synthetic_training_batch(2, 32, num_classes=3, instances_per_image=(4, 2))
    result = benchmark.benchmark_training(
        model, optimizer, batch, clip_grad={"max_norm": 0.5}, warmup=1, repeats=3
    )
    forward, backward, opt = (result[k]["median_ms"] for k in ("forward", "backward", "optimizer"))
    # each phase holds its own sleep and none of its neighbours'
    assert 30 <= forward < 50 and 20 <= backward < 40 and 10 <= opt < 30
    step = result["step"]["median_ms"]
    assert step >= 60 and 0.7 * step <= result["split_sum_ms"] <= 1.5 * step
    assert result["step"]["images_per_s"] == pytest.approx(2000 / step)
    assert model.seen_counts == [[4, 2]] * 8  # (1 warm-up + 3 timed) x (whole + split step)
    # clipped by the Trainer: the gradient norm before clipping is logged, the one left is 0.5
    assert result["last_grad_norm"] == pytest.approx(10 * math.sqrt(3))
    assert torch.linalg.vector_norm(model.weight.grad).item() == pytest.approx(0.5, rel=1e-5)
    assert result["last_loss"] == pytest.approx(10 * float(model.weight.detach().sum()), rel=0.2)
    assert not result["grad_scaler"]


def test_synthetic_training_batch_holds_the_requested_rectangles():
    batch = benchmark.synthetic_training_batch(3, 64, num_classes=5, instances_per_image=(12, 7))
    assert [len(sample["instances"]) for sample in batch] == [12, 7, 12]  # repeated over the batch
    for sample in batch:
        instances = sample["instances"]
        assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.uint8
        masks, boxes = instances.gt_masks, instances.gt_boxes.tensor
        for mask, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist()):
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            expected = torch.zeros(64, 64, dtype=torch.bool)
            expected[y0:y1, x0:x1] = True
            assert torch.equal(mask, expected)  # a filled rectangle, exactly its box
        assert instances.gt_classes.max() < 5
        assert torch.equal(sample["sem_seg"] != 255, masks.any(0))
    assert [len(s["instances"]) for s in benchmark.synthetic_training_batch(2, 32, 5, 3)] == [3, 3]


def test_instance_counts_reach_the_benchmarked_batch(tmp_path, tiny_weights, monkeypatch):
    seen = []
    real = benchmark.benchmark_training

    def recording(model, optimizer, batch, **kwargs):
        seen.append([len(sample["instances"]) for sample in batch])
        return real(model, optimizer, batch, **kwargs)

    monkeypatch.setattr(benchmark, "benchmark_training", recording)
    argv = ["--config-file", str(TINY_CONFIG), "--weights", str(tiny_weights), "--device", "cpu"]
    argv += ["--skip-inference", "--train-batch", "3", "--train-size", "32"]
    argv += ["--train-instances", "5,2", "--warmup", "0", "--repeats", "1"]
    assert benchmark.main(argv + ["--output", str(tmp_path / "b.json")]) == 0
    assert seen == [[5, 2, 5]]
    results = json.loads((tmp_path / "b.json").read_text())
    assert results["training"]["instances_per_image"] == [5, 2, 5]


def test_cli_measures_every_precision_in_one_run(tmp_path, tiny_weights, capsys):
    output = tmp_path / "bench.json"
    argv = ["--config-file", str(TINY_CONFIG), "--weights", str(tiny_weights), "--device", "cpu"]
    argv += ["--amp", "fp32,bf16", "--height", "64", "--width", "96", "--train-size", "64"]
    argv += ["--warmup", "1", "--repeats", "2", "--output", str(output)]
    assert benchmark.main(argv + ["train.clip_grad.enabled=True"]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("figure"))
    assert header.split()[2:] == ["fp32", "bf16", "bf16", "gain", "vs", "fp32"]
    for stage in (
        "inference compute only (pixel_scorer), batch 1 @ 64x96",
        "post-processing",
        "inference end to end (Predictor, in-memory image)",
        "training step, batch 2 @ 64x64 (12+7 instances)",
        "forward incl. losses",
        "optimizer incl. clipping",
        "peak memory (process RSS, lifetime max)",
    ):
        assert stage in printed
    results = json.loads(output.read_text())
    assert results["precisions"] == ["fp32", "bf16"]
    assert results["command"].startswith("python tools/benchmark.py --config-file")
    assert "--amp fp32,bf16" in results["command"]
    assert results["device"] == "cpu" and results["torch"] == torch.__version__
    assert results["parameters"] == 4
    assert results["clip_grad"] == {"max_norm": 0.1, "norm_type": 2}  # common/train.py defaults
    training = results["training"]
    assert training["optimizer"] == "SGD" and training["instances_per_image"] == [12, 7]
    for precision in ("fp32", "bf16"):
        inference = results["inference"][precision]
        assert inference["compute_only"]["median_ms"] <= inference["model_call"]["median_ms"]
        assert inference["end_to_end"]["runs"] == 2
        step = training[precision]
        assert all(step[k]["median_ms"] > 0 for k in ("step", "forward", "backward", "optimizer"))
        assert math.isfinite(step["last_loss"]) and step["last_grad_norm"] is not None
        assert step["peak_memory_mib"] > 0


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--amp", "fp32,fp8", "unknown precision(s) ['fp8']: give a comma-separated list of fp32"),
        ("--amp", "bf16,bf16", "precision listed twice"),
        ("--train-instances", "12,x", "expected comma-separated instance counts >= 0"),
    ],
)
def test_bad_values_are_clear_errors(flag, value, message, capsys):
    with pytest.raises(SystemExit) as error:
        benchmark.main(["--config-file", str(TINY_CONFIG), flag, value])
    assert error.value.code == 2
    assert message in capsys.readouterr().err


def test_compare_official_needs_a_config_with_official_figures(capsys):
    with pytest.raises(SystemExit):
        benchmark.main(["--config-file", str(TINY_CONFIG), "--compare", "official"])
    assert f"no official figures for {str(TINY_CONFIG)!r}; known configs: {R50_INSTANCE}" in (
        capsys.readouterr().err
    )
    assert benchmark.official_figures(f"projects/maskdino/configs/{R50_INSTANCE}.py")
    assert benchmark.official_figures(f"maskdino/{R50_INSTANCE}.py")


def _r50_results(device_name: str, train_size: int = 1024) -> dict:
    """Results as main() writes them, for the R50 instance config, fp32 and bf16."""

    def timing(ms):
        return {"median_ms": ms}

    def training(step_ms, memory_mib):
        return {
            "step": timing(step_ms),
            "forward": timing(step_ms / 2),
            "backward": timing(step_ms / 3),
            "optimizer": timing(step_ms / 6),
            "peak_memory_mib": memory_mib,
        }

    def inference(ms):
        return {"end_to_end": timing(ms), "compute_only": timing(ms / 2), "peak_memory_mib": 1000}

    return {
        "config": R50_INSTANCE,
        "overrides": [],
        "device": "cuda",
        "device_name": device_name,
        "precisions": ["fp32", "bf16"],
        "parameters": 52_058_004,
        "inference_size": [800, 1216],
        "inference": {"fp32": inference(58.7), "bf16": inference(19.5667)},
        "training": {
            "batch_size": 2,
            "image_size": [train_size, train_size],
            "instances_per_image": [12, 7],
            "fp32": training(455.0, 11.9e9 / 2**20),
            "bf16": training(151.6667, 7.9333e9 / 2**20),
        },
    }


def test_official_comparison_gives_speed_ups_only_on_an_h200():
    on_h200 = benchmark.format_official_comparison(_r50_results("NVIDIA H200"))
    step = next(line for line in on_h200.splitlines() if line.startswith("training step"))
    assert step.split()[-4:] == ["455.0", "151.7", "1.00x", "3.00x"]
    end_to_end = next(line for line in on_h200.splitlines() if "end to end" in line)
    assert end_to_end.split()[-2:] == ["1.00x", "3.00x"]
    memory = next(line for line in on_h200.splitlines() if "training peak memory" in line)
    assert memory.split()[-2:] == ["1.00x", "1.50x"]  # 11.9 GB / 7.93 GB
    assert "455 (fp16 AMP)" in step and "speed-up bf16" in on_h200 and "note:" not in on_h200

    elsewhere = benchmark.format_official_comparison(_r50_results("NVIDIA A100-SXM4-80GB"))
    assert "speed-up bf16" not in elsewhere and "3.00x" not in elsewhere
    assert "not an H200: the official figures are for reference only" in elsewhere
    assert "455 (fp16 AMP)" in elsewhere

    other_recipe = benchmark.format_official_comparison(_r50_results("NVIDIA H200", 512))
    assert "speed-up bf16" not in other_recipe
    assert "official recipe is training batch 2 @ 1024x1024" in other_recipe


@pytest.mark.slow
def test_split_of_a_real_mask_dino_step_adds_up(tmp_path):
    """The Mask DINO demo config (resnet10t, width 64): the phase hooks fire in the real model
    (every phase is timed) and the three phases partition one step: their sum is the time of
    the step they were marked in, measured around it. (The median split and the median whole
    step come from different runs; on a loaded CPU they may differ by any factor, so they are
    not compared.)"""
    from detrex_ext.engine.benchmark import TrainingPhaseTimer
    from detrex_ext.engine.train_loop import Trainer
    from detrex_ext.utils.events import EventStorage

    output = tmp_path / "b.json"
    argv = ["--config-file", "maskdino/maskdino_demo_synthetic.py", "--device", "cpu"]
    argv += ["--skip-inference", "--train-size", "64", "--train-instances", "4,3"]
    argv += ["--warmup", "1", "--repeats", "2", "--output", str(output)]
    reduced = [
        "model.num_queries=10",
        "model.sem_seg_head.pixel_decoder.transformer_enc_layers=1",
        "model.sem_seg_head.transformer_predictor.dec_layers=2",
        "model.sem_seg_head.transformer_predictor.dn_num=4",
        "model.criterion.num_points=64",
    ]
    assert benchmark.main(argv + reduced) == 0
    training = json.loads(output.read_text())["training"]["fp32"]
    phases = [training[k]["median_ms"] for k in ("forward", "backward", "optimizer")]
    assert all(ms > 0 for ms in phases)
    assert training["split_sum_ms"] == pytest.approx(sum(phases))
    assert math.isfinite(training["last_loss"]) and training["last_loss"] > 0

    cfg = benchmark.load_config("maskdino/maskdino_demo_synthetic.py", reduced)
    model = benchmark.build_model(cfg, None, "cpu").train()
    batch = benchmark.synthetic_training_batch(2, 64, 5, (4, 3))
    trainer = Trainer(model, iter([batch]), torch.optim.SGD(model.parameters(), lr=0.0))
    phases = TrainingPhaseTimer(model, torch.device("cpu"))
    trainer.register_hooks([phases])
    with EventStorage(0) as trainer.storage:
        start = time.perf_counter()
        split = phases.measure(trainer.run_step)
        elapsed = time.perf_counter() - start
    assert all(seconds > 0 for seconds in split) and sum(split) <= elapsed


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(benchmark.OFFICIAL_H200))
def test_official_figures_belong_to_our_config_of_that_name(name):
    """Each official entry's parameter count (from the note) is that of our config's model."""
    from detrex_ext.config import instantiate

    model = instantiate(benchmark.load_config(f"maskdino/{name}.py").model)
    assert sum(p.numel() for p in model.parameters()) == benchmark.OFFICIAL_H200[name]["parameters"]


# ----------------------------------------------------------------- side by side (vs the official)


class _Detector(torch.nn.Module):
    """Sleeps ``delay`` s in a parameter-holding child, then returns fixed instances; in training
    returns a loss that draws from the global RNG. Logs every call with the inputs' marker."""

    def __init__(self, name, delay, calls, score_shift=0.0):
        super().__init__()
        self.net = _SleepyNet(1, 1)
        self.name, self.delay, self.calls, self.score_shift = name, delay, calls, score_shift
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, batched_inputs):
        self.calls.append((self.name, self.training, batched_inputs[0].get("marker")))
        time.sleep(self.delay)
        if self.training:
            return {"loss": self.weight * torch.rand(()), "loss_b": self.weight * 2}
        self.net(torch.zeros(1, 1))
        results = []
        for x in batched_inputs:
            inst = Instances((x["height"], x["width"]))
            inst.scores = torch.tensor([0.9, 0.5, 0.7]) + self.score_shift
            inst.pred_classes = torch.tensor([3, 1, 2])
            inst.pred_boxes = Boxes(torch.tensor([[0, 0, 4, 4], [1, 1, 2, 2], [0, 1, 3, 3.0]]))
            results.append({"instances": inst})
        return results


def test_side_by_side_alternates_times_and_compares_outputs():
    from detrex_ext.engine.benchmark import (
        Contender,
        compare_inference_outputs,
        side_by_side_inference,
    )

    calls = []
    entered = []

    @contextlib.contextmanager
    def context():
        entered.append(True)
        yield

    def adapt(batch):
        return [dict(x, marker="adapted") for x in batch]

    slow = _Detector("slow", 0.02, calls)
    fast = _Detector("fast", 0.0, calls, score_shift=3e-5)
    contenders = {"slow": Contender(slow, adapt, context), "fast": Contender(fast)}
    batch = [{"image": torch.zeros(3, 8, 8, dtype=torch.uint8), "height": 8, "width": 8}]
    result = side_by_side_inference(contenders, batch, warmup=1, repeats=3)
    # alternating, the first contender first in every round; adapt and context only for it
    assert [c[0] for c in calls] == ["slow", "fast"] * 4
    assert all(c[2] == ("adapted" if c[0] == "slow" else None) for c in calls)
    assert len(entered) == 4 and not any(c[1] for c in calls)
    slow_ms = result["slow"]["end_to_end"]["median_ms"]
    fast_ms = result["fast"]["end_to_end"]["median_ms"]
    assert slow_ms >= 40 and fast_ms >= 20  # 20 ms in the network (+ 20 ms outside for "slow")
    assert 20 <= result["slow"]["compute_only"]["median_ms"] < slow_ms
    ratios = result["ratios"]["end_to_end"]["fast"]
    assert ratios["ratio_of_medians"] == pytest.approx(fast_ms / slow_ms)
    assert 0 < ratios["median_of_round_ratios"] < 1
    (image,) = compare_inference_outputs(result["outputs"]["slow"], result["outputs"]["fast"])
    assert image["top_k"] == 3 and image["classes_equal"]
    assert image["max_abs_score_diff"] == pytest.approx(3e-5, rel=1e-3)
    assert image["max_abs_box_diff_px"] == 0


def test_side_by_side_training_resets_the_seed_and_splits_the_step():
    from detrex_ext.engine.benchmark import Contender, compare_losses, side_by_side_training

    calls = []
    contenders = {
        "a": Contender(_Detector("a", 0.0, calls)),
        "b": Contender(_Detector("b", 0.0, calls)),
    }
    batch = [{"image": torch.zeros(3, 8, 8, dtype=torch.uint8)}]
    result = side_by_side_training(contenders, batch, warmup=1, repeats=2, seed=7)
    assert [c[:2] for c in calls] == [("a", True), ("b", True)] * 3
    torch.manual_seed(7)
    draw = float(torch.rand(()))
    for name in "ab":
        assert result[name]["losses"] == pytest.approx({"loss": draw, "loss_b": 2.0})
        step = result[name]["step"]["median_ms"]
        assert step >= result[name]["forward"]["median_ms"]
        assert contenders[name].model.weight.grad is None  # gradients released after each step
        assert not contenders[name].model.training
    agreement = compare_losses(result["a"]["losses"], result["b"]["losses"])
    assert agreement["same_names"] and agreement["total_relative_diff"] == 0
    assert compare_losses({"x": 2.0, "y": 2.0}, {"x": 2.0, "y": 3.0})["total_relative_diff"] == 0.25


def test_size_batches_parse_and_bad_ones_are_clear_errors(capsys):
    assert benchmark.parse_size_batches("320x480,256x256;800x1216") == [
        [(320, 480), (256, 256)],
        [(800, 1216)],
    ]
    for bad in ("320x480,", "320", "8x8", "axb"):
        with pytest.raises(SystemExit):
            benchmark.main(["--config-file", str(TINY_CONFIG), "--sizes", bad])
        assert "expected batches of HxW image sizes >= 16" in capsys.readouterr().err


def test_rectangular_training_batches():
    batch = benchmark.synthetic_training_batch(2, [(32, 48), (40, 24)], 3, (4, 2))
    for sample, (h, w) in zip(batch, [(32, 48), (40, 24)]):
        assert sample["image"].shape == (3, h, w) and (sample["height"], sample["width"]) == (h, w)
        boxes = sample["instances"].gt_boxes.tensor
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert (boxes[:, :2] < boxes[:, 2:]).all()
    with pytest.raises(ValueError, match="need 2 image sizes of at least 16 pixels"):
        benchmark.synthetic_training_batch(2, [(32, 48)], 3)


def test_official_model_errors_name_the_fix(tmp_path):
    from detrex_projects.maskdino import official

    with pytest.raises(ValueError, match="no official Mask DINO config is known for 'tiny_config'"):
        official.build_official_model(tmp_path, TINY_CONFIG, {})
    with pytest.raises(ValueError, match="must be an exported IDEA-Research/MaskDINO tree"):
        official.build_official_model(tmp_path, R50_INSTANCE, {})


def test_cpu_only_tensor_moves_is_scoped():
    from detrex_projects.maskdino.official import cpu_only_tensor_moves

    x = torch.ones(2)
    with cpu_only_tensor_moves():
        assert x.cuda() is x
        assert x.to("cuda").device.type == "cpu"
        assert x.to(device=torch.device("cuda", 0), dtype=torch.float64).dtype == torch.float64
        assert x.to(torch.float16).dtype == torch.float16
    assert torch.Tensor.cuda is not None and x.to(torch.float64).dtype == torch.float64
    if not torch.cuda.is_available():
        with pytest.raises((RuntimeError, AssertionError)):
            x.cuda()


def test_official_root_needs_the_cpu(capsys):
    with pytest.raises(SystemExit):
        benchmark.main(
            ["--config-file", str(TINY_CONFIG), "--official-root", ".", "--device", "cuda"]
        )
    assert "--official-root compares on the CPU" in capsys.readouterr().err


def test_profile_call_attributes_time_to_modules_and_operators():
    from detrex_ext.engine.benchmark import format_profile, profile_call

    class Heavy(torch.nn.Module):
        def forward(self, x):
            for _ in range(20):
                x = torch.mm(x, x) / 64
            return x

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.heavy = Heavy()
            self.light = torch.nn.Linear(64, 64)

        def forward(self, x):
            return self.light(self.heavy(x))

    model = Model()
    x = torch.randn(64, 64)
    result = profile_call(lambda: model(x), model, depth=1, by_class=["Linear"])
    modules = {name: (ms, share) for name, ms, share in result["modules"]}
    assert set(modules) == {"(model)", "heavy", "Linear"}  # "light" is scoped by its class
    assert modules["(model)"][0] >= modules["heavy"][0] >= 0 and modules["heavy"][1] <= 1.0
    mm = next(op for op in result["operators"] if op[0] == "aten::mm")
    assert mm[3] == 20 and result["total_ms"] > 0
    text = format_profile("tiny", result)
    assert text.startswith("tiny: ") and "aten::mm" in text and "heavy" in text
    assert not model._forward_hooks and not model.heavy._forward_pre_hooks  # scopes removed


def test_synthetic_image_batch():
    from detrex_ext.engine.benchmark import synthetic_image_batch

    batch = synthetic_image_batch([(32, 48), (16, 16)])
    assert [x["image"].shape for x in batch] == [(3, 32, 48), (3, 16, 16)]
    assert [(x["height"], x["width"]) for x in batch] == [(32, 48), (16, 16)]
    assert batch[0]["image"].dtype == torch.uint8 and batch[0]["image"].is_contiguous()
