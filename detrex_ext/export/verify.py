"""Check an exported file against the eager model it came from, and report the figures.

For a batch of images at the exported size, three results are compared:

* the exported file run by ONNX Runtime (CPU) or as a ``torch.export`` program;
* the adapter run eagerly (the same graph code in PyTorch): raw outputs of an ONNX file must be
  within 1e-4 (``pred_logits``, ``pred_boxes``); every output of a program within 1e-5;
* the model's own eager inference (``adapter.reference_predictions``): final predictions,
  matched order-independently, must have the same classes, boxes within 1e-3 (normalised),
  scores within 1e-3, thresholded-mask IoU >= 0.99, and panoptic / semantic maps equal on
  >= 99.9% of the pixels.

Discrete decisions (two-stage query selection, mask-enhanced anchors, the instance top-k cut,
the panoptic keep threshold) jump when a value crosses a tie, and a numerically faithful export
may then legitimately differ. ``adapter.decision_ties`` lists, per image, the decisions of the
eager model within ``delta`` (1e-4, far above the float32 noise of an export) of a tie. A figure
outside its tolerance on such an image, for a check that decision affects, is excused (reported,
not counted); every other figure counts. A check left with no counted image fails.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .onnx_predictor import mask_threshold
from .parity import compare_instances, label_agreement, matched_rows_max_diff, segment_agreement

__all__ = [
    "TOLERANCES",
    "Check",
    "ParityReport",
    "read_metadata",
    "run_exported",
    "verify_export",
]

TOLERANCES = {
    "onnx_raw": 1e-4,
    "program": 1e-5,
    "box": 1e-3,
    "score": 1e-3,
    "mask_iou": 0.99,
    "pixels": 0.999,
}
TIE_DELTA = 1e-4


@dataclass
class Check:
    """One figure over the images: its worst counted value, and the values excused by ties."""

    name: str
    limit: float
    at_least: bool = False  # True: value >= limit passes (agreements); else value <= limit
    counted: list[float] = field(default_factory=list)
    excused: list[float] = field(default_factory=list)

    def within(self, value: float) -> bool:
        return value >= self.limit if self.at_least else value <= self.limit

    def add(self, value: float, near_tie: bool = False) -> None:
        """Count ``value``, unless it misses the tolerance on an image whose eager decisions
        affecting this check are near a tie (then it is excused)."""
        value = float(value)
        (self.excused if near_tie and not self.within(value) else self.counted).append(value)

    @property
    def value(self) -> float | None:
        if not self.counted:
            return None
        return min(self.counted) if self.at_least else max(self.counted)

    @property
    def passed(self) -> bool:
        return self.value is not None and self.within(self.value)

    def row(self) -> str:
        sign = ">=" if self.at_least else "<="
        value = self.value
        shown = "n/a" if value is None else f"{value:.3g}"
        status = "ok" if self.passed else ("NOT CHECKED" if value is None else "FAIL")
        extra = ""
        if self.excused:
            excused = ", ".join(f"{v:.3g}" for v in self.excused)
            extra = f"  (excused near a tie: {excused})"
        return f"  {self.name:<38} {shown:>10}  {sign} {self.limit:<8g} {status}{extra}"


@dataclass
class ParityReport:
    """All checks of one verification, with the eager decisions found near a tie."""

    path: str
    backend: str
    num_images: int
    checks: dict[str, Check]
    ties: list[dict[str, str]]

    @property
    def ok(self) -> bool:
        return all(check.passed for check in self.checks.values())

    def format(self) -> str:
        lines = [
            f"parity of {self.path} ({self.backend}) against eager PyTorch fp32, "
            f"{self.num_images} images:"
        ]
        lines += [check.row() for check in self.checks.values()]
        for index, ties in enumerate(self.ties):
            for check, reason in ties.items():
                lines.append(f"  image {index}: {check} decisions near a tie: {reason}")
        lines.append("PASSED" if self.ok else "FAILED")
        return "\n".join(lines)

    def figures(self) -> dict[str, Any]:
        return {name: check.value for name, check in self.checks.items()}


def run_exported(path: str | os.PathLike, images: np.ndarray) -> tuple[dict, dict[str, Any]]:
    """Outputs (name -> array) of an exported file on uint8 ``images`` and its metadata."""
    path = Path(path)
    if path.suffix == ".pt2":
        from .exporter import load_program

        program, metadata = load_program(path)
        with torch.no_grad():
            arrays = program.module()(torch.from_numpy(images))
        return dict(zip(metadata["outputs"]["names"], (a.numpy() for a in arrays))), metadata
    from .onnx_predictor import OnnxPredictor

    predictor = OnnxPredictor(path)
    return predictor.run(images), predictor.metadata


def _new_checks(program: bool, postprocess: bool, names: list[str]) -> dict[str, Check]:
    raw_limit = TOLERANCES["program" if program else "onnx_raw"]
    checks = {
        "pred_logits": Check("raw: max |d pred_logits|", raw_limit),
        "pred_boxes": Check("raw: max |d pred_boxes|", raw_limit),
    }
    if program:
        checks["all_float"] = Check("program: max |d| of every float output", raw_limit)
        checks["all_int"] = Check("program: equal integer/bool elements", 1.0, at_least=True)
    if postprocess and "instance_scores" in names:
        checks["unmatched"] = Check("instances: unmatched or other class", 0)
        checks["box"] = Check("instances: max |d box| (normalised)", TOLERANCES["box"])
        checks["score"] = Check("instances: max |d score|", TOLERANCES["score"])
        checks["iou"] = Check("instances: min mask IoU", TOLERANCES["mask_iou"], at_least=True)
    if postprocess and "sem_seg" in names:
        checks["semantic"] = Check("semantic: equal pixels", TOLERANCES["pixels"], at_least=True)
    if postprocess and "panoptic_seg" in names:
        checks["panoptic"] = Check("panoptic: equal pixels", TOLERANCES["pixels"], at_least=True)
    return checks


def _as_numpy(outputs: tuple[torch.Tensor, ...], names: list[str]) -> dict[str, np.ndarray]:
    return {name: tensor.detach().cpu().numpy() for name, tensor in zip(names, outputs)}


def verify_export(
    adapter: torch.nn.Module,
    path: str | os.PathLike,
    images: torch.Tensor | np.ndarray | None = None,
    *,
    delta: float = TIE_DELTA,
) -> ParityReport:
    """Compare an exported file with the eager ``adapter`` it was exported from.

    Args:
        adapter: the model's export adapter (same weights as the file).
        path: the ``.onnx`` or ``.pt2`` file.
        images: uint8 ``[B, 3, H, W]`` at the exported size (default: 2 generated images).
        delta: a figure missing its tolerance is excused where an eager decision affecting it is
            within this of a tie.
    """
    from .exporter import sample_images

    path = Path(path)
    if images is None:
        spec = read_metadata(path)["input"]
        images = sample_images(2, int(spec["height"]), int(spec["width"]), seed=1)
    images = torch.as_tensor(np.asarray(images))
    out, metadata = run_exported(path, images.numpy())
    names = list(metadata["outputs"]["names"])
    postprocess = bool(metadata["outputs"].get("postprocess"))
    program = metadata.get("format") == "torch_export"
    with torch.no_grad():
        eager = _as_numpy(adapter.eval()(images), names)
    reference = adapter.reference_predictions(images) if postprocess else None
    ties = adapter.decision_ties(images, delta)
    checks = _new_checks(program, postprocess, names)
    threshold = mask_threshold(metadata)
    size = tuple(images.shape[-2:])
    for b in range(images.shape[0]):
        raw_tie = "raw" in ties[b]
        diffs, _ = matched_rows_max_diff(
            [eager["pred_logits"][b], eager["pred_boxes"][b]],
            [out["pred_logits"][b], out["pred_boxes"][b]],
        )
        checks["pred_logits"].add(diffs[0], raw_tie)
        checks["pred_boxes"].add(diffs[1], raw_tie)
        if program:
            _compare_all(checks, eager, out, b, raw_tie)
        if reference is None:
            continue
        candidate = {name: out[name][b] for name in names}
        if "unmatched" in checks:
            parity = compare_instances(
                reference[b], candidate, size, threshold, mask_tie=_mask_tie(threshold, delta)
            )
            checks["unmatched"].add(parity.unmatched, raw_tie or "instances" in ties[b])
            checks["box"].add(parity.max_box_diff, raw_tie)
            checks["score"].add(parity.max_score_diff, raw_tie)
            checks["iou"].add(parity.min_mask_iou, raw_tie)
        if "semantic" in checks:
            agreement = label_agreement(reference[b]["sem_seg"], out["sem_seg"][b])
            checks["semantic"].add(agreement, raw_tie)
        if "panoptic" in checks:
            agreement = segment_agreement(reference[b]["panoptic_seg"], out["panoptic_seg"][b])
            checks["panoptic"].add(agreement, raw_tie or "panoptic" in ties[b])
    backend = "torch.export program" if program else "ONNX Runtime CPU"
    return ParityReport(str(path), backend, int(images.shape[0]), checks, ties)


def _mask_tie(threshold: float, delta: float) -> float:
    """``delta`` in the units of the file's float masks: logits (threshold 0) as they are,
    probabilities scaled by the sigmoid's slope at 0.5 (1/4)."""
    return delta if threshold == 0.0 else delta / 4


def _compare_all(checks, eager: dict, out: dict, b: int, near_tie: bool) -> None:
    float_diff, int_agreement = 0.0, 1.0
    for name, expected in eager.items():
        got = out[name][b]
        if np.issubdtype(expected.dtype, np.floating):
            float_diff = max(float_diff, float(np.abs(expected[b] - got).max(initial=0.0)))
        elif got.size:
            int_agreement = min(int_agreement, float((expected[b] == got).mean()))
    checks["all_float"].add(float_diff, near_tie)
    checks["all_int"].add(int_agreement, near_tie)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of an exported ``.onnx`` or ``.pt2`` file."""
    path = Path(path)
    if path.suffix == ".pt2":
        from .exporter import load_program

        return load_program(path)[1]
    from .onnx_predictor import OnnxPredictor

    return OnnxPredictor(path).metadata
