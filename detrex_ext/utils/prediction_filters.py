"""Checks of the instance filters the predictors take (``score_threshold``, ``top_k``), without
torch: the PyTorch Predictor and the ONNX runtime refuse the same values with the same words."""

from __future__ import annotations

__all__ = ["check_score_threshold", "check_top_k"]


def check_score_threshold(value: float | None, name: str = "score_threshold") -> None:
    """None, or a number in [0, 1] (scores are probabilities)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(
            f"{name} must be a number in [0, 1] (scores are probabilities), got {value!r}"
        )


def check_top_k(value: int | None, name: str = "top_k") -> None:
    """None (no limit), or an integer >= 1."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{name} must be an integer >= 1, got {value!r}; use None to keep every instance"
        )
