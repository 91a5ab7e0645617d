"""The cost blocks of ``HungarianMatcher.match_many``: L outputs x S images per step.

A block stacks the predictions of L same-layout outputs on S images (``[L, S, Q, ...]``) and
scores every prediction against the targets of all S images, concatenated (``[L, S, Q, T]``);
image s's matrix is ``costs[l, s]`` restricted to its own targets' columns. Helpers here sample
the mask points of a block, sanitise non-finite costs on the device and solve every matrix on
the host after one transfer.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

Indices = list[tuple[torch.Tensor, torch.Tensor]]

_NONFINITE_WARNING = (
    "HungarianMatcher: the cost matrix has {} NaN/inf entries (check the "
    "predicted boxes / logits for NaN or degenerate boxes); they are replaced by costs beyond "
    "the finite range so matching can proceed."
)


def _sanitize(
    cost: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace NaN / +inf by a cost above every finite one and -inf by one below, per matrix.

    Runs on the costs' device without reading any value back (no host synchronisation). With
    ``high`` / ``low`` the largest / smallest finite cost of a matrix (0 when it has none) and
    ``span = high - low + 1``, NaN and +inf become ``high + span`` and -inf ``low - span``,
    computed in float64 and rounded to the costs' dtype (the values of the former host formula).

    Args:
        cost: ``[..., Q, T]`` costs.
        valid: optional bool, broadcastable to ``cost``: the entries that belong to the matrix
            (the others are neither counted nor used for ``high`` / ``low``, and their
            replaced values are meaningless).

    Returns:
        The sanitised ``[..., Q, T]`` costs and ``[...]`` int64 counts of non-finite entries.
    """
    finite = torch.isfinite(cost)
    if valid is None:
        num_bad = (~finite).sum((-2, -1))
    else:
        num_bad = (valid & ~finite).sum((-2, -1))
        finite = finite & valid
    if cost.numel() == 0:
        return cost, num_bad
    some_finite = finite.any(-1, keepdim=True).any(-2, keepdim=True)
    high = torch.where(finite, cost, float("-inf")).amax((-2, -1), keepdim=True).double()
    low = torch.where(finite, cost, float("inf")).amin((-2, -1), keepdim=True).double()
    high = torch.where(some_finite, high, 0.0)
    low = torch.where(some_finite, low, 0.0)
    span = high - low + 1.0
    above, below = (high + span).to(cost.dtype), (low - span).to(cost.dtype)
    cost = torch.where(torch.isnan(cost) | (cost == float("inf")), above, cost)
    return torch.where(cost == float("-inf"), below, cost), num_bad


def _point_grid(coords: torch.Tensor) -> torch.Tensor:
    """``[N, P, 2]`` (x, y) points in [0, 1]^2 -> ``grid_sample``'s ``[N, P, 1, 2]`` grid."""
    return (2.0 * coords - 1.0).unsqueeze(2)


def _sample_mask_points(
    pred_masks: torch.Tensor, targets: list[dict[str, torch.Tensor]], coords: list[list]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask logits and target masks at each (output, image)'s shared points.

    The maps of one grid are sampled as the channels of one ``grid_sample`` call: bilinear
    weights are computed per point and applied per channel, so the values are those of
    ``point_sample`` map by map.

    Args:
        pred_masks: ``[L, S, Q, h, w]`` mask logits of L outputs and S images.
        targets: S dicts with float ``masks [T_s, H, W]``.
        coords: ``coords[l][s]``, the ``[1, P, 2]`` points of output l and image s.

    Returns:
        ``[L, S, Q, P]`` logits and ``[L, S, T, P]`` target values, ``T = sum_s T_s``: image
        s's targets (its columns) filled, the other images' columns zero.
    """
    num_outputs, num_images = pred_masks.shape[:2]
    grid = _point_grid(torch.cat([c for per_output in coords for c in per_output]))
    logits = F.grid_sample(pred_masks.flatten(0, 1), grid, align_corners=False)
    logits = logits.view(num_outputs, num_images, pred_masks.shape[2], -1)
    counts = [len(target["masks"]) for target in targets]
    labels = logits.new_zeros(num_outputs, num_images, sum(counts), grid.shape[1])
    start = 0
    for s, (target, count) in enumerate(zip(targets, counts)):
        points = torch.cat([per_output[s] for per_output in coords], dim=1)  # [1, L * P, 2]
        sampled = F.grid_sample(target["masks"][None], _point_grid(points), align_corners=False)
        labels[:, s, start : start + count] = sampled.view(count, num_outputs, -1).transpose(0, 1)
        start += count
    return logits, labels


def _num_targets(target: dict[str, torch.Tensor]) -> int:
    return len(target["labels"]) if "labels" in target else len(target["boxes"])


def _stack_block(
    outputs: list[dict[str, torch.Tensor]], keys: list[str], images: list[int]
) -> dict[str, torch.Tensor]:
    """``[L, S, Q, ...]`` predictions of L outputs on the S images (consecutive or not)."""
    if images == list(range(images[0], images[-1] + 1)):
        select = slice(images[0], images[-1] + 1)
    else:
        select = torch.tensor(images, device=outputs[0][keys[0]].device)
    return {k: torch.stack([out[k][select] for out in outputs]) for k in keys}


def _own_columns(targets: list[dict[str, torch.Tensor]], device: torch.device) -> torch.Tensor:
    """``[S, 1, T]`` bool: column t belongs to image s (the targets concatenated in order)."""
    counts = torch.tensor([_num_targets(t) for t in targets])
    owner = torch.repeat_interleave(torch.arange(len(targets)), counts)
    return (owner[None, :] == torch.arange(len(targets))[:, None])[:, None].to(device)


def _solve_on_host(
    blocks: list[tuple[list[int], list[int], torch.Tensor, torch.Tensor]],
    indices: list[Indices],
    targets: list[dict[str, torch.Tensor]],
) -> None:
    """Copy every cost matrix to the host in ONE transfer, warn about non-finite costs, solve.

    Args:
        blocks: ``(output ids [L], images [S], costs [L, S, Q, T], non-finite counts [L, S])``
            on the device; image s's matrix of output ``ids[l]`` is ``costs[l, s]`` restricted
            to its own targets' columns.
        indices: per output, per image ``(query_idx, target_idx)``; filled in place.
        targets: the B target dicts (for the per-image column ranges).
    """
    flat = [cost.reshape(-1) for _, _, cost, _ in blocks]
    flat += [num_bad.reshape(-1).to(cost.dtype) for _, _, cost, num_bad in blocks]
    host = torch.cat(flat).cpu().numpy()  # the one device-to-host transfer (CUDA: one sync)
    offset, bad_offset, bad_counts = 0, sum(cost.numel() for _, _, cost, _ in blocks), {}
    for ids, images, cost, _ in blocks:
        matrices = host[offset : offset + cost.numel()].reshape(cost.shape)
        offset += cost.numel()
        for layer, i in enumerate(ids):
            start = 0
            for s, b in enumerate(images):
                stop = start + _num_targets(targets[b])
                rows, cols = linear_sum_assignment(matrices[layer, s, :, start:stop])
                indices[i][b] = (
                    torch.as_tensor(rows, dtype=torch.int64),
                    torch.as_tensor(cols, dtype=torch.int64),
                )
                bad_counts[i, b] = int(host[bad_offset])
                start, bad_offset = stop, bad_offset + 1
    for key in sorted(bad_counts):  # one warning per matrix with NaN/inf, output by output
        if bad_counts[key]:
            warnings.warn(_NONFINITE_WARNING.format(bad_counts[key]), RuntimeWarning, stacklevel=4)


def _group_by_layout(
    outputs_list: Sequence[dict[str, torch.Tensor]], keys: list[list[str]]
) -> list[list[int]]:
    """Ids of the outputs whose predictions can be stacked (same keys, shapes, dtypes, devices),
    grouped in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, outputs in enumerate(outputs_list):
        layout = tuple(
            (k, tuple(outputs[k].shape), outputs[k].dtype, outputs[k].device) for k in keys[i]
        )
        groups.setdefault(layout, []).append(i)
    return list(groups.values())
