"""PointRend helpers: bilinear sampling at normalised points and uncertainty-based point selection."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "calculate_uncertainty",
    "draw_point_candidates",
    "get_uncertain_point_coords_with_randomness",
    "point_sample",
    "select_uncertain_points",
]

# CPU: bytes of float32 candidate coordinates ranked per step of the point selection
_CANDIDATE_STEP_BYTES = 4 << 20


def point_sample(
    input: torch.Tensor, point_coords: torch.Tensor, align_corners: bool = False, **kwargs
) -> torch.Tensor:
    """Bilinearly sample ``input`` at normalised (x, y) points in [0, 1] x [0, 1].

    A thin wrapper of ``F.grid_sample`` that maps [0, 1] coordinates to its [-1, 1] grid.

    Args:
        input: ``[N, C, H, W]`` feature maps.
        point_coords: ``[N, P, 2]`` or ``[N, Hg, Wg, 2]`` (x, y) coordinates.
        align_corners: ``grid_sample``'s flag (False: (0, 0) is the top-left corner of the
            top-left pixel, so pixel centres sit at (j + 0.5) / W).
        **kwargs: further ``grid_sample`` options (``mode``, ``padding_mode``).

    Returns:
        ``[N, C, P]`` or ``[N, C, Hg, Wg]`` samples.
    """
    add_dim = point_coords.dim() == 3
    if add_dim:
        point_coords = point_coords.unsqueeze(2)
    grid = point_coords.mul(2.0).sub_(1.0)  # = 2 * point_coords - 1, without a second temporary
    output = F.grid_sample(input, grid, align_corners=align_corners, **kwargs)
    return output.squeeze(3) if add_dim else output


def calculate_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of binary mask logits: ``-|logit|`` (highest at the decision boundary).

    Shapes: ``[R, 1, ...]`` -> ``[R, 1, ...]``.
    """
    # negated in place: PointRend's candidate maps are large, and a second fresh temporary of
    # their size is page-faulted in on CPU
    return torch.abs(logits).neg_()


def get_uncertain_point_coords_with_randomness(
    coarse_logits: torch.Tensor,
    uncertainty_func: Callable[[torch.Tensor], torch.Tensor],
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PointRend's training-time point selection.

    Draws ``int(num_points * oversample_ratio)`` uniform points per map, keeps the
    ``int(importance_sample_ratio * num_points)`` most uncertain ones (by ``uncertainty_func`` of
    the bilinearly sampled logits) and fills up with fresh uniform points.

    Args:
        coarse_logits: ``[N, C, H, W]`` (C = 1 for class-agnostic masks).
        uncertainty_func: ``[N, C, P] -> [N, 1, P]`` uncertainty of sampled logits.
        num_points: points P to return per map.
        oversample_ratio: >= 1, oversampling factor of the candidate set.
        importance_sample_ratio: in [0, 1], share of P chosen by uncertainty.
        generator: optional random generator (default: the global one).

    Returns:
        ``[N, P, 2]`` (x, y) coordinates in [0, 1], fp32 (fp64 for fp64 logits).
    """
    candidates, extra = draw_point_candidates(
        coarse_logits.shape[0],
        num_points,
        oversample_ratio,
        importance_sample_ratio,
        coarse_logits.device,
        # coordinates stay >= fp32 even for half-precision logits (upcast for sampling)
        torch.promote_types(coarse_logits.dtype, torch.float32),
        generator,
    )
    num_uncertain = int(importance_sample_ratio * num_points)
    return select_uncertain_points(
        coarse_logits, candidates, extra, uncertainty_func, num_uncertain
    )


def draw_point_candidates(
    num_maps: int,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The random draws of ``get_uncertain_point_coords_with_randomness``, in its order.

    Returns:
        ``[N, int(num_points * oversample_ratio), 2]`` candidates (``dtype``) and the
        ``[N, num_points - int(importance_sample_ratio * num_points), 2]`` uniform points that
        fill up (float32; None when there are none).
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(
            f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}"
        )
    num_sampled = int(num_points * oversample_ratio)
    candidates = torch.rand(num_maps, num_sampled, 2, device=device, generator=generator)
    num_random = num_points - int(importance_sample_ratio * num_points)
    extra = None
    if num_random > 0:
        extra = torch.rand(num_maps, num_random, 2, device=device, generator=generator)
    return candidates.to(dtype), extra


def select_uncertain_points(
    coarse_logits: torch.Tensor,
    candidates: torch.Tensor,
    extra: torch.Tensor | None,
    uncertainty_func: Callable[[torch.Tensor], torch.Tensor],
    num_uncertain: int,
) -> torch.Tensor:
    """Keep the ``num_uncertain`` most uncertain candidates of each map, append ``extra``.

    Args:
        coarse_logits: ``[N, C, H, W]``.
        candidates: ``[N, S, 2]`` from ``draw_point_candidates`` (scratch space on CPU: its
            values are changed).
        extra: ``[N, R, 2]`` or None.
        uncertainty_func: ``[N, C, P] -> [N, 1, P]``.
        num_uncertain: K, ``int(importance_sample_ratio * num_points)``.

    Returns:
        ``[N, K + R, 2]`` (x, y) points in [0, 1], in ``candidates``' dtype.
    """
    num_maps, num_sampled = candidates.shape[:2]
    maps_per_step = max(num_maps, 1)
    if candidates.device.type == "cpu":
        # A few maps at a time: their samples, uncertainties and top-k then stay well under
        # glibc's mmap threshold and are reused from the heap instead of being page-faulted in
        # afresh on every call (the candidates are one draw, as the official code draws them).
        maps_per_step = max(1, _CANDIDATE_STEP_BYTES // max(1, num_sampled * 2 * 4))
    steps = [
        _most_uncertain(
            coarse_logits[start : start + maps_per_step].to(candidates.dtype),
            candidates[start : start + maps_per_step],
            uncertainty_func,
            num_uncertain,
        )
        for start in range(0, max(num_maps, 1), maps_per_step)
    ]
    point_coords = steps[0] if len(steps) == 1 else torch.cat(steps)
    if extra is not None:
        point_coords = torch.cat([point_coords, extra.to(point_coords.dtype)], dim=1)
    return point_coords


def _most_uncertain(
    logits: torch.Tensor,
    candidates: torch.Tensor,
    uncertainty_func: Callable[[torch.Tensor], torch.Tensor],
    num_uncertain: int,
) -> torch.Tensor:
    """The ``num_uncertain`` most uncertain of the ``candidates [N, S, 2]`` (x, y) points on
    ``logits [N, C, H, W]``, unordered -> ``[N, num_uncertain, 2]``."""
    # On CPU the candidates become grid_sample's [-1, 1] grid in place (a fresh [N, S, 2] tensor
    # costs page faults there) and the kept ones are mapped back. Both maps are exact: the CPU's
    # float32 uniform draws are multiples of 2^-24, so 2c - 1 and (g + 1) / 2 need no rounding.
    # (CUDA's draws are finer near 0, and its caching allocator makes the copy cheap.)
    in_place = candidates.device.type == "cpu"
    grid = candidates.mul_(2.0).sub_(1.0) if in_place else candidates * 2.0 - 1.0
    samples = F.grid_sample(logits, grid.unsqueeze(2), align_corners=False)
    uncertainties = uncertainty_func(samples.squeeze(3))
    # The order of the kept points does not matter (the losses average over points), so the
    # top-k is not sorted (the same set, about half the time on CPU).
    index = torch.topk(uncertainties[:, 0, :], k=num_uncertain, dim=1, sorted=False)[1]
    if in_place:
        return _gather_points(grid, index).add_(1.0).mul_(0.5)
    return _gather_points(candidates, index)


def _gather_points(points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``points[n, index[n, k]]``: ``[N, S, 2]`` points, ``[N, K]`` indices -> ``[N, K, 2]``.

    fp32 (x, y) pairs are gathered as one 64-bit word each (a plain ``[N, K]`` gather instead of
    an expanded ``[N, K, 2]`` one); the values are copied bit for bit either way.
    """
    if points.dtype == torch.float32 and points.is_contiguous():
        pairs = points.view(torch.int64).squeeze(-1)  # [N, S]
        return torch.gather(pairs, 1, index).unsqueeze(-1).view(torch.float32)
    return torch.gather(points, 1, index[..., None].expand(-1, -1, 2))
