"""Triton deformable-attention kernels vs a brute-force float64 PyTorch reference.

CPU (CI): the kernels run through Triton's interpreter. ``TRITON_INTERPRET=1`` is read when the
kernels are decorated, so the cases run in one subprocess (this file executed as a script) and the
flag never leaks into the rest of the pytest session; each case then becomes its own test here.
GPU: the same cases at real shapes, in-process, plus no-sync / CUDA-graph / tile checks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
REPO_ROOT = Path(__file__).resolve().parents[2]
BENCHMARK_TOOL = REPO_ROOT / "tools" / "benchmark_msda.py"

DTYPES = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp64": torch.float64,
}
# Accuracy bounds (relative L2 error vs the float64 reference), see check_report. The factor is
# above 1 because Triton's interpreter converts fp32 -> bf16 by truncation (twice the error of the
# round-to-nearest-even conversion the GPU uses).
ROUNDING_FACTOR = 2.5
COMPUTE_NOISE = {"fp32": 1e-5, "fp64": 1e-12}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    shapes: tuple[tuple[int, int], ...]
    batch: int = 2
    queries: int = 21
    heads: int = 2
    head_dim: int = 8
    points: int = 2
    value_dtype: str = "fp32"
    sample_dtype: str = "fp32"  # sampling locations and attention weights
    locations: str = "uniform"  # "uniform" in [-0.25, 1.25], or "border"
    # fixed launch config (block_q, num_warps, unroll_points); None: autotuned on GPU, the
    # module's default config in the interpreter
    config: tuple[int, int, bool] | None = None


# fmt: off
INTERPRETER_CASES = [
    Case("fp32_two_tiles_with_tail", shapes=((3, 4), (2, 3))),
    Case("fp32_tile8_three_levels_unrolled", shapes=((5, 3), (3, 2), (1, 1)), heads=3, config=(8, 2, True)),
    Case("fp32_border_points", shapes=((4, 8), (2, 4)), batch=1, queries=32, locations="border"),
    Case("bf16_value", shapes=((5, 3), (3, 2), (1, 1)), queries=17, heads=3, head_dim=16, points=3, value_dtype="bf16"),
    Case("fp16_value", shapes=((6, 5),), batch=1, queries=9, heads=1, head_dim=32, points=4, value_dtype="fp16"),
    Case("bf16_all_border_unrolled", shapes=((4, 8), (2, 4)), batch=1, queries=16, value_dtype="bf16", sample_dtype="bf16", locations="border", config=(16, 4, True)),
    Case("fp16_all", shapes=((2, 7), (1, 3)), queries=5, heads=2, head_dim=4, points=1, value_dtype="fp16", sample_dtype="fp16"),
    Case("fp64", shapes=((3, 4), (2, 3)), batch=1, queries=7, value_dtype="fp64", sample_dtype="fp64"),
    Case("head_dim_256", shapes=((3, 3),), batch=1, queries=3, heads=1, head_dim=256, points=2),
    Case("head_dim_12_not_pow2", shapes=((3, 4), (2, 2)), batch=3, queries=4, heads=2, head_dim=12, points=1),
    Case("one_query_five_levels", shapes=((4, 4), (3, 3), (2, 2), (1, 2), (1, 1)), batch=1, queries=1, heads=4, head_dim=2, points=3),
]

# through detrex_ext.layers.multi_scale_deformable_attn with the triton backend forced
OP_CASES = [
    Case("op_fp32", shapes=((3, 4), (2, 3)), queries=18),
    Case("op_bf16_border", shapes=((4, 8), (2, 4)), batch=1, queries=16, value_dtype="bf16", locations="border"),
]

GPU_LEVELS = ((64, 64), (32, 32), (16, 16), (8, 8))
GPU_CASES = [
    Case("gpu_encoder_fp32", shapes=GPU_LEVELS, queries=5440, heads=8, head_dim=32, points=4),
    Case("gpu_encoder_bf16", shapes=GPU_LEVELS, queries=5440, heads=8, head_dim=32, points=4, value_dtype="bf16"),
    Case("gpu_decoder_fp16", shapes=GPU_LEVELS, queries=400, heads=8, head_dim=32, points=4, value_dtype="fp16"),
    Case("gpu_border_fp32", shapes=((16, 32), (8, 16)), queries=1024, heads=8, head_dim=32, points=4, locations="border"),
    Case("gpu_bf16_all", shapes=GPU_LEVELS, queries=300, heads=8, head_dim=32, points=4, value_dtype="bf16", sample_dtype="bf16"),
    Case("gpu_head_dim_256", shapes=((32, 32), (16, 16)), batch=3, queries=700, heads=2, head_dim=256, points=4),
    Case("gpu_head_dim_64_fp64", shapes=((20, 30), (10, 15)), queries=333, heads=4, head_dim=64, points=8, value_dtype="fp64", sample_dtype="fp64"),
]
# fmt: on
MSDA_ARGS = (
    "value",
    "spatial_shapes",
    "level_start_index",
    "sampling_locations",
    "attention_weights",
)
DIFFERENTIABLE = ("value", "sampling_locations", "attention_weights")


# ----------------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------------
def reference_msda(
    value: torch.Tensor,
    shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Brute-force gather of the four corners of every sample. value [B,S,H,D] -> [B,Q,H*D].

    Corner weights are written as (1 - f) and f with f = x - floor(x), so autograd gives the
    floor-based derivative of grid_sample (not that of |x - corner|, which is 0 at integers).
    """
    batch, _, heads, dim = value.shape
    queries = sampling_locations.shape[1]
    out = value.new_zeros(batch, queries, heads, dim)
    start = 0
    for level, (height, width) in enumerate(shapes):
        level_value = value[:, start : start + height * width].permute(0, 2, 1, 3)  # [B,H,hw,D]
        start += height * width
        x = sampling_locations[:, :, :, level, :, 0] * width - 0.5  # [B,Q,H,P]
        y = sampling_locations[:, :, :, level, :, 1] * height - 0.5
        x0, y0 = x.detach().floor(), y.detach().floor()
        fx, fy = x - x0, y - y0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                cx, cy = x0 + dx, y0 + dy
                inside = (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height)
                index = (cy.clamp(0, height - 1) * width + cx.clamp(0, width - 1)).long()
                index = index.permute(0, 2, 1, 3).flatten(2)  # [B,H,Q*P]
                rows = torch.gather(level_value, 2, index[..., None].expand(-1, -1, -1, dim))
                rows = rows.view(batch, heads, queries, -1, dim).permute(0, 2, 1, 3, 4)
                weight = attention_weights[:, :, :, level] * wx * wy * inside
                out = out + (weight[..., None] * rows).sum(3)
    return out.flatten(2)


def grid_sample_msda(value, shapes, sampling_locations, attention_weights) -> torch.Tensor:
    """The official PyTorch formulation (grid_sample, align_corners=False, zeros padding)."""
    batch, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    per_level = value.split([h * w for h, w in shapes], dim=1)
    samples = []
    for level, (height, width) in enumerate(shapes):
        image = per_level[level].permute(0, 2, 3, 1).reshape(batch * heads, dim, height, width)
        grid = 2 * sampling_locations[:, :, :, level] - 1  # [B,Q,H,P,2]
        grid = grid.transpose(1, 2).flatten(0, 1)  # [B*H,Q,P,2]
        samples.append(F.grid_sample(image, grid, "bilinear", "zeros", align_corners=False))
    sampled = torch.stack(samples, dim=-2).flatten(-2)  # [B*H, D, Q, L*P]
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    out = (sampled * weights).sum(-1).view(batch, heads * dim, queries)
    return out.transpose(1, 2).contiguous()


def _border_coordinates(size: int) -> torch.Tensor:
    """Normalised coordinates on and around the edges of a map of `size` pixels (exact in bf16)."""
    pixels = [
        -2.0,
        -1.5,
        -1.0,
        -0.5,
        0.0,
        0.5,
        1.0,
        size - 1.5,
        size - 1.0,
        size - 0.5,
        size,
        size + 1,
    ]
    values = [(p + 0.5) / size for p in pixels] + [0.0, 1.0, -1.0, 2.0]
    return torch.tensor(values, dtype=torch.float64)


def make_inputs(case: Case, device: str, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    levels = len(case.shapes)
    tokens = sum(h * w for h, w in case.shapes)
    value = torch.randn(case.batch, tokens, case.heads, case.head_dim, generator=gen)
    loc_shape = (case.batch, case.queries, case.heads, levels, case.points, 2)
    if case.locations == "uniform":
        locations = torch.rand(loc_shape, generator=gen, dtype=torch.float64) * 1.5 - 0.25
    else:
        locations = torch.empty(loc_shape, dtype=torch.float64)
        for level, (height, width) in enumerate(case.shapes):
            for axis, size in ((0, width), (1, height)):
                choices = _border_coordinates(size)
                pick = torch.randint(len(choices), loc_shape[:3] + (case.points,), generator=gen)
                locations[:, :, :, level, :, axis] = choices[pick]
    weights = torch.rand(loc_shape[:-1], generator=gen)
    sample_dtype = DTYPES[case.sample_dtype]
    starts = [0]
    for h, w in case.shapes[:-1]:
        starts.append(starts[-1] + h * w)
    return {
        "value": value.to(device, DTYPES[case.value_dtype]),
        "spatial_shapes": torch.tensor(case.shapes, dtype=torch.int64, device=device),
        "level_start_index": torch.tensor(starts, dtype=torch.int64, device=device),
        "sampling_locations": locations.to(device, sample_dtype),
        "attention_weights": weights.to(device, sample_dtype),
        "grad_output": torch.randn(
            case.batch, case.queries, case.heads * case.head_dim, generator=gen
        ).to(device, DTYPES[case.value_dtype]),
    }


def reference_results(case: Case, inputs: dict) -> dict[str, torch.Tensor]:
    """Output and gradients of the float64 reference on exactly the (rounded) kernel inputs."""
    leaves = {key: inputs[key].double().requires_grad_() for key in DIFFERENTIABLE}
    out = reference_msda(
        leaves["value"], case.shapes, leaves["sampling_locations"], leaves["attention_weights"]
    )
    out.backward(inputs["grad_output"].double())
    return {
        "output": out.detach(),
        "grad_value": leaves["value"].grad,
        "grad_sampling_locations": leaves["sampling_locations"].grad,
        "grad_attention_weights": leaves["attention_weights"].grad,
    }


def relative_error(result: torch.Tensor, expected: torch.Tensor) -> float:
    result, expected = result.double(), expected.double()
    return ((result - expected).norm() / expected.norm().clamp_min(1e-30)).item()


GRADIENTS = ("grad_value", "grad_sampling_locations", "grad_attention_weights")


def run_triton_functions(case: Case, inputs: dict) -> dict[str, torch.Tensor]:
    """Output and gradients from ``msda_forward`` / ``msda_backward`` directly."""
    from detrex_ext.layers import ms_deform_attn_triton as msda_triton

    args = [inputs[k] for k in MSDA_ARGS]
    tile = {"config": msda_triton.KernelConfig(*case.config) if case.config else None}
    results = {"output": msda_triton.msda_forward(*args, **tile)}
    grads = msda_triton.msda_backward(inputs["grad_output"], *args, **tile)
    return {**results, **dict(zip(GRADIENTS, grads))}


def run_custom_op(case: Case, inputs: dict, compile: bool = False) -> dict[str, torch.Tensor]:
    """The same through BLOCKS' custom op with the Triton backend forced, via autograd."""
    from detrex_ext.layers import multi_scale_deformable_attn, set_msda_backend

    op = torch.compile(multi_scale_deformable_attn, fullgraph=True) if compile else multi_scale_deformable_attn  # fmt: skip
    leaves = {k: inputs[k].clone().requires_grad_() for k in DIFFERENTIABLE}
    set_msda_backend("triton")
    try:
        out = op(
            leaves["value"],
            inputs["spatial_shapes"],
            inputs["level_start_index"],
            leaves["sampling_locations"],
            leaves["attention_weights"],
        )
        out.backward(inputs["grad_output"])
    finally:
        set_msda_backend(None)
    grads = [leaves[k].grad for k in DIFFERENTIABLE]
    return {"output": out.detach(), **dict(zip(GRADIENTS, grads))}


def kink_mask(case: Case, sampling_locations: torch.Tensor) -> torch.Tensor:
    """[B,Q,H,L,P,2] True where the pixel coordinate is within 1e-3 of an integer but not on it.

    There the derivative along that axis jumps (the sample changes cell), and the kernel's fp32
    coordinate may land on the other side of the integer than the float64 reference's; points
    exactly on integers (the border cases) are unambiguous and stay checked.
    """
    sizes = torch.tensor([(w, h) for h, w in case.shapes], dtype=torch.float64)
    pixels = sampling_locations.double().cpu() * sizes[:, None, :] - 0.5
    distance = (pixels - pixels.round()).abs()
    return ((distance > 0) & (distance < 1e-3)).to(sampling_locations.device)


def compare_case(case: Case, device: str, runner=run_triton_functions) -> dict:
    """Runs the Triton kernels on one case; errors vs the reference and result dtypes."""
    inputs = make_inputs(case, device)
    results = runner(case, inputs)
    expected = reference_results(case, inputs)
    ambiguous = kink_mask(case, inputs["sampling_locations"])
    report = {}
    for key, tensor in results.items():
        reference = expected[key]
        if key == "grad_sampling_locations":
            tensor = tensor.masked_fill(ambiguous, 0)
            reference = reference.masked_fill(ambiguous, 0)
        report[key] = {
            "error": relative_error(tensor, reference),
            # error of the exact result merely rounded to the returned dtype
            "rounding": relative_error(reference.to(tensor.dtype), reference),
            "dtype": str(tensor.dtype).replace("torch.", ""),
            "shape": list(tensor.shape),
            "finite": bool(torch.isfinite(tensor).all()),
        }
    return report


def expected_dtype(case: Case, key: str) -> str:
    name = case.value_dtype if key in ("output", "grad_value") else case.sample_dtype
    return str(DTYPES[name]).replace("torch.", "")


def check_report(case: Case, report: dict) -> None:
    """Each result must be as close to the float64 reference as its own dtype allows.

    Allowed relative L2 error = ROUNDING_FACTOR x the error of the exact result merely rounded to
    the returned dtype, plus the accumulation noise of the compute dtype.
    """
    noise = COMPUTE_NOISE["fp64" if case.value_dtype == "fp64" else "fp32"]
    for key, entry in report.items():
        assert entry["finite"], f"{case.name}: {key} has non-finite values"
        assert entry["dtype"] == expected_dtype(case, key), f"{case.name}: {key} dtype {entry}"
        tolerance = ROUNDING_FACTOR * entry["rounding"] + noise
        assert entry["error"] <= tolerance, f"{case.name}: {key} {entry} > {tolerance:.3g}"


# ----------------------------------------------------------------------------------------------
# CPU: the reference itself, input validation
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("locations", ["uniform", "border"])
def test_reference_matches_grid_sample_with_gradients(locations):
    # border coordinates on power-of-two maps are exact in binary floating point, so both formulas
    # see the same pixel (on a 5-wide map grid_sample's rounding can move 0.0 to -1e-17)
    shapes = ((4, 8), (2, 4), (3, 5)) if locations == "uniform" else ((4, 8), (2, 4), (1, 2))
    case = Case("ref", shapes=shapes, queries=30, heads=3, head_dim=4, points=3)
    case = dataclasses.replace(case, locations=locations, value_dtype="fp64", sample_dtype="fp64")
    inputs = make_inputs(case, "cpu")
    grad_out = inputs["grad_output"]
    results = []
    for fn in (reference_msda, grid_sample_msda):
        leaves = [inputs[k].clone().requires_grad_() for k in DIFFERENTIABLE]
        out = fn(leaves[0], case.shapes, leaves[1], leaves[2])
        out.backward(grad_out)
        results.append([out.detach()] + [leaf.grad for leaf in leaves])
    for ours, official in zip(*results):
        torch.testing.assert_close(ours, official, rtol=1e-10, atol=1e-10)
    # the border set really exercises corners outside the map: some samples are fully zero
    if locations == "border":
        assert (results[0][0] == 0).any() and (results[0][3] != 0).any()


def test_reference_hand_computed_value():
    # one 2x2 map, value = pixel index; loc (0.5, 0.5) is the centre -> mean of the four = 1.5
    value = torch.arange(4, dtype=torch.float64).view(1, 4, 1, 1)
    loc = torch.tensor([0.5, 0.5, 0.25, 0.25, 1.0, 0.25], dtype=torch.float64).view(
        1, 3, 1, 1, 1, 2
    )
    out = reference_msda(value, [(2, 2)], loc, torch.ones(1, 3, 1, 1, 1, dtype=torch.float64))
    # (0.25, 0.25) is pixel (0, 0) exactly; (1.0, 0.25): x = 1.5 -> half of pixel (1, 0) = 0.5
    assert out.flatten().tolist() == [1.5, 0.0, 0.5]


@needs_triton
def test_cpu_tensors_without_interpreter_give_clear_error(monkeypatch):
    from detrex_ext.layers import ms_deform_attn_triton as msda_triton

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    inputs = make_inputs(INTERPRETER_CASES[0], "cpu")
    args = [inputs[k] for k in MSDA_ARGS]
    with pytest.raises(RuntimeError, match="need CUDA tensors.*TRITON_INTERPRET=1"):
        msda_triton.msda_forward(*args)
    with pytest.raises(ValueError, match=r"attention_weights must be \[B, Q, H, L, P\]"):
        msda_triton.msda_forward(*args[:4], args[4][:, :3])
    with pytest.raises(ValueError, match=r"spatial_shapes must be \[L=2, 2\]"):
        msda_triton.msda_forward(args[0], args[1][:1], *args[2:])
    with pytest.raises(TypeError, match="value must be float32/bfloat16/float16/float64"):
        msda_triton.msda_forward(args[0].int(), *args[1:])
    assert msda_triton.is_available() == torch.cuda.is_available() or not HAS_TRITON


# ----------------------------------------------------------------------------------------------
# CPU: Triton's interpreter, in a subprocess
# ----------------------------------------------------------------------------------------------
def _run_interpreter_worker() -> dict:
    """Body of the subprocess: every interpreter case, plus the empty-input edge cases."""
    from detrex_ext.layers import ms_deform_attn_triton as msda_triton

    reports = {case.name: compare_case(case, "cpu") for case in INTERPRETER_CASES}
    for case in OP_CASES:
        reports[case.name] = compare_case(case, "cpu", runner=run_custom_op)
    # no queries / no batch: right shapes, no launch
    empty = {}
    for case in (Case("no_queries", ((2, 2),), queries=0), Case("no_batch", ((2, 2),), batch=0)):
        inputs = make_inputs(case, "cpu")
        args = [inputs[k] for k in MSDA_ARGS]
        out = msda_triton.msda_forward(*args)
        grads = msda_triton.msda_backward(inputs["grad_output"], *args)
        empty[case.name] = [list(t.shape) for t in (out, *grads)]
    reports["_empty"] = empty
    reports["_available"] = msda_triton.is_available()
    reports["_guards"] = _check_guards()
    reports["_tuning_space"] = _tuning_space()
    reports["_benchmark"] = _run_benchmark_smoke()
    return reports


def _check_guards() -> dict:
    """A level that does not fit in value reads zeros; deterministic mode is honoured."""
    from detrex_ext.layers import ms_deform_attn_triton as msda_triton

    case = Case("guard", shapes=((3, 4), (2, 3)), queries=5)
    inputs = make_inputs(case, "cpu")
    args = [inputs[k] for k in MSDA_ARGS]
    # level 1 claimed to start at token 15: 15 + 2*3 > 18 tokens
    bad_start = torch.tensor([0, 15])
    out_bad = msda_triton.msda_forward(args[0], args[1], bad_start, *args[3:])
    weights = args[4].clone()
    weights[:, :, :, 1] = 0  # the same attention without level 1
    out_level0 = msda_triton.msda_forward(*args[:4], weights)
    grads_bad = msda_triton.msda_backward(inputs["grad_output"], args[0], args[1], bad_start, *args[3:])  # fmt: skip
    result = {
        "forward_max_diff": (out_bad - out_level0).abs().max().item(),
        "grad_attn_level1_max": grads_bad[2][:, :, :, 1].abs().max().item(),
        "grad_attn_level0_max": grads_bad[2][:, :, :, 0].abs().max().item(),
    }
    torch.use_deterministic_algorithms(True)
    try:
        msda_triton.msda_backward(inputs["grad_output"], *args)
        result["deterministic_error"] = None
    except RuntimeError as exc:
        result["deterministic_error"] = str(exc)
    finally:
        torch.use_deterministic_algorithms(False)
    return result


def _tuning_space() -> dict:
    """The autotuner's candidate configs per pass, value dtype and head dim."""
    from detrex_ext.layers import _ms_deform_attn_triton_kernels as kernels

    space = {}
    for backward in (False, True):
        for dtype in ("fp32", "bf16"):
            value = torch.empty(0, dtype=DTYPES[dtype])
            for head_dim in (1, 2, 8, 32, 64, 128, 256, 1024):
                prune = kernels._pruner(backward)
                configs = prune(kernels._all_configs(), {"value_ptr": value}, BLOCK_D=head_dim)
                key = f"{'bwd' if backward else 'fwd'}_{dtype}_{head_dim}"
                space[key] = [[c.kwargs["BLOCK_Q"], c.num_warps, c.kwargs["UNROLL_POINTS"]] for c in configs]  # fmt: skip
    return space


def _load_benchmark_tool():
    spec = importlib.util.spec_from_file_location("benchmark_msda", BENCHMARK_TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _run_benchmark_smoke() -> dict:
    """tools/benchmark_msda.py --device cpu --interpret at one toy shape: exit code, figures."""
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "figures.json"
        argv = ["--device", "cpu", "--interpret", "--shapes", "decoder_train", "--dtypes", "bf16"]
        argv += ["--warmup", "0", "--repeats", "1", "--output", str(output)]
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            code = _load_benchmark_tool().main(argv)
        figures = json.loads(output.read_text()) if output.exists() else None
    return {"code": code, "stdout": stdout.getvalue(), "figures": figures}


@pytest.fixture(scope="module")
def interpreter_reports() -> dict:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--interpreter-worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(REPO_ROOT),
    )
    if proc.returncode != 0:
        pytest.fail(f"interpreter worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_triton
@pytest.mark.parametrize("case", INTERPRETER_CASES, ids=lambda c: c.name)
def test_interpreter_matches_reference(interpreter_reports, case):
    report = interpreter_reports[case.name]
    assert set(report) == {
        "output",
        "grad_value",
        "grad_sampling_locations",
        "grad_attention_weights",
    }
    levels = len(case.shapes)
    assert report["output"]["shape"] == [case.batch, case.queries, case.heads * case.head_dim]
    loc_shape = [case.batch, case.queries, case.heads, levels, case.points, 2]
    assert report["grad_sampling_locations"]["shape"] == loc_shape
    check_report(case, report)


@needs_triton
@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c.name)
def test_interpreter_custom_op_with_triton_backend(interpreter_reports, case):
    check_report(case, interpreter_reports[case.name])


@needs_triton
def test_interpreter_empty_inputs_and_availability(interpreter_reports):
    assert interpreter_reports["_available"] is True
    no_queries = [[2, 0, 16], [2, 4, 2, 8], [2, 0, 2, 1, 2, 2], [2, 0, 2, 1, 2]]
    assert interpreter_reports["_empty"]["no_queries"] == no_queries
    assert interpreter_reports["_empty"]["no_batch"][0] == [0, 21, 16]


@needs_triton
def test_interpreter_inconsistent_shapes_read_zeros_and_determinism_is_honoured(
    interpreter_reports,
):
    guards = interpreter_reports["_guards"]
    assert guards["forward_max_diff"] < 1e-6
    assert guards["grad_attn_level1_max"] == 0.0 and guards["grad_attn_level0_max"] > 0
    assert "not deterministic" in guards["deterministic_error"]


@needs_triton
def test_tuning_space(interpreter_reports):
    space = interpreter_reports["_tuning_space"]
    assert all(space.values()), "every head dim keeps at least one config"
    # Mask DINO's head dim: the notes' best probe tiles are candidates, looped and unrolled
    assert [16, 4, False] in space["fwd_fp32_32"] and [32, 4, False] in space["fwd_fp32_32"]
    assert [16, 4, True] in space["fwd_fp32_32"] and [16, 4, True] in space["bwd_bf16_32"]
    assert len(space["fwd_fp32_32"]) <= 8  # bounded first-call compile time
    # 16-bit backward: only 4 elements per thread and load (no layout conversions)
    assert space["bwd_bf16_32"] == [[16, 4, False], [32, 8, False], [16, 4, True]]
    # wide heads keep register tiles small
    assert all(bq * 256 <= 4096 for bq, _, _ in space["fwd_fp32_256"])


@needs_triton
def test_benchmark_tool_smoke_run_in_interpreter(interpreter_reports):
    run = interpreter_reports["_benchmark"]
    assert run["code"] == 0, run["stdout"]
    (row,) = run["figures"]["rows"]
    assert (row["shape"], row["dtype"], row["queries"]) == ("decoder_train", "bf16", 7)
    for key in ("forward_ms", "forward+backward_ms"):
        assert row[f"pytorch_{key}"] > 0 and row[f"triton_{key}"] > 0
    assert row["speedup_forward"] == row["pytorch_forward_ms"] / row["triton_forward_ms"]
    # the Triton path agrees with the PyTorch path (bf16 value: output/grad_value rounding only)
    errors = row["triton_rel_error"]
    assert errors["output"] < 1e-2 and errors["grad_value"] < 1e-2, errors
    assert errors["grad_loc"] < 1e-5 and errors["grad_attn"] < 1e-5, errors
    assert "speed-up triton vs pytorch: forward" in run["stdout"]
    assert "(not measured in this run)" in run["stdout"]  # targets are for encoder_train


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_benchmark_tool_without_cuda_says_so_and_fails(capsys):
    assert _load_benchmark_tool().main([]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# GPU: real shapes, tiles, no host sync, CUDA graphs
# ----------------------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: c.name)
def test_gpu_matches_reference(case):
    check_report(case, compare_case(case, "cuda"))


@pytest.mark.gpu
@needs_triton
def test_gpu_every_tuned_config_is_correct():
    from detrex_ext.layers import _ms_deform_attn_triton_kernels as kernels

    base = GPU_CASES[1]  # bf16 value, encoder-like
    configs = kernels._all_configs()
    for head_dim in (32, 128):
        for c in kernels._pruner(backward=False)(configs, {}, BLOCK_D=head_dim):
            config = (c.kwargs["BLOCK_Q"], c.num_warps, c.kwargs["UNROLL_POINTS"])
            case = dataclasses.replace(base, queries=999, head_dim=head_dim, heads=2, config=config)
            check_report(case, compare_case(case, "cuda"))


def _gpu_args(case: Case, seed: int = 0) -> tuple[list, torch.Tensor]:
    inputs = make_inputs(case, "cuda", seed)
    return [inputs[k] for k in MSDA_ARGS], inputs["grad_output"]


@pytest.mark.gpu
@needs_triton
def test_gpu_no_host_sync_and_cuda_graph_replay():
    from detrex_ext.layers import ms_deform_attn_triton as msda_triton

    case = GPU_CASES[0]
    args, grad_out = _gpu_args(case)
    msda_triton.msda_forward(*args)  # autotune outside the checks
    msda_triton.msda_backward(grad_out, *args)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        msda_triton.msda_forward(*args)
        msda_triton.msda_backward(grad_out, *args)
    finally:
        torch.cuda.set_sync_debug_mode("default")

    static = [a.clone() for a in args]
    static_grad = grad_out.clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = msda_triton.msda_forward(*static)
        grads = msda_triton.msda_backward(static_grad, *static)
    new_args, new_grad = _gpu_args(case, seed=1)
    for buffer, fresh in zip(static + [static_grad], new_args + [new_grad]):
        buffer.copy_(fresh)
    graph.replay()
    torch.testing.assert_close(out, msda_triton.msda_forward(*new_args))
    for replayed, eager in zip(grads, msda_triton.msda_backward(new_grad, *new_args)):
        torch.testing.assert_close(replayed, eager, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "torch_compile"])
def test_gpu_custom_op_with_triton_backend(compiled):
    case = GPU_CASES[1]
    runner = functools.partial(run_custom_op, compile=compiled)
    check_report(case, compare_case(case, "cuda", runner=runner))


if __name__ == "__main__" and "--interpreter-worker" in sys.argv:
    print(json.dumps(_run_interpreter_worker()))
