"""`HungarianMatcher.match_many`: several outputs matched with one device-to-host transfer.

The reference is the former per-output path, written out here: per image, one
``rand(1, P, 2)`` draw, 2-D cost terms, host-side NaN/inf replacement, scipy's solver.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from detrex_ext.layers import point_sample
from detrex_ext.modeling import HungarianMatcher
from detrex_projects.maskdino.modeling.criterion import SetCriterion

MASK_DINO_WEIGHTS = dict(cost_class=4.0, cost_bbox=5.0, cost_giou=2.0, cost_mask=5.0, cost_dice=5.0)
BOX_WEIGHTS = dict(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0)


def _boxes(*shape):
    return torch.cat([torch.rand(*shape, 2) * 0.6 + 0.2, torch.rand(*shape, 2) * 0.3 + 0.05], -1)


def _outputs(batch, queries, classes=5, mask_size=(8, 10)):
    return {
        "pred_logits": torch.randn(batch, queries, classes) * 2,
        "pred_boxes": _boxes(batch, queries),
        "pred_masks": torch.randn(batch, queries, *mask_size) * 3,
    }


def _targets(counts, classes=5, mask_size=(16, 20)):
    return [
        {
            "labels": torch.randint(0, classes, (n,)),
            "boxes": _boxes(n),
            "masks": torch.rand(n, *mask_size) > 0.5,
        }
        for n in counts
    ]


def _reference_match(matcher, outputs, targets):
    """The per-output, per-image path (one draw per image with targets, 2-D costs)."""
    indices = []
    for b, target in enumerate(targets):
        if len(target["labels"]) == 0:
            indices.append((torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64)))
            continue
        pred = {k: v[b] for k, v in outputs.items() if k.startswith("pred_")}
        target = dict(target)
        if any(term.needs_points for term in matcher.costs):
            coords = torch.rand(1, matcher.num_points, 2)
            logits, masks = pred["pred_masks"], target["masks"]
            pred["mask_points"] = point_sample(
                logits[:, None].float(), coords.expand(len(logits), -1, -1)
            ).squeeze(1)
            target["mask_points"] = point_sample(
                masks[:, None].float(), coords.expand(len(masks), -1, -1)
            ).squeeze(1)
        cost = sum(term.weight * term(pred, target) for term in matcher.costs).float()
        finite = torch.isfinite(cost)
        if not finite.all():
            high, low = cost[finite].max().item(), cost[finite].min().item()
            span = high - low + 1.0
            cost = torch.nan_to_num(cost, nan=high + span, posinf=high + span, neginf=low - span)
        rows, cols = linear_sum_assignment(cost.numpy())
        indices.append((torch.as_tensor(rows), torch.as_tensor(cols)))
    return indices


def _assert_same(a, b):
    assert len(a) == len(b)
    for (rows_a, cols_a), (rows_b, cols_b) in zip(a, b):
        assert rows_a.dtype == cols_a.dtype == torch.int64
        assert rows_a.tolist() == rows_b.tolist() and cols_a.tolist() == cols_b.tolist()


def _case(seed=0, queries=(7, 7, 7, 9), counts=(3, 0, 5, 7)):
    """Outputs of different layouts (the last has more queries) and images with 0..7 targets."""
    torch.manual_seed(seed)
    return [_outputs(len(counts), q) for q in queries], _targets(counts)


@pytest.mark.parametrize("weights", [MASK_DINO_WEIGHTS, BOX_WEIGHTS], ids=["masks", "boxes"])
@pytest.mark.parametrize(
    "max_batch_points", [None, 1 << 24, 7 * 16 * 2], ids=["default", "all", "chunks-of-2"]
)
def test_match_many_equals_per_output_matching(weights, max_batch_points):
    outputs_list, targets = _case()
    matcher = HungarianMatcher(**weights, num_points=16, max_batch_points=max_batch_points)
    torch.manual_seed(1)
    many = matcher.match_many(outputs_list, targets)
    torch.manual_seed(1)
    forward = [matcher(outputs, targets) for outputs in outputs_list]
    torch.manual_seed(1)
    reference = [_reference_match(matcher, outputs, targets) for outputs in outputs_list]
    assert len(many) == len(outputs_list)
    for ours, per_output, ref in zip(many, forward, reference):
        _assert_same(ours, ref)
        _assert_same(per_output, ref)
    assert [len(rows) for rows, _ in many[0]] == [3, 0, 5, 7]


def test_block_costs_equal_per_output_per_image_costs():
    """A block of L outputs x S images (every prediction scored against the targets of all S
    images) holds, in each image's own columns, the costs of that output and image alone
    (row-wise terms; vectorised transcendental functions and matrix products may round the
    last bit differently at other tensor sizes)."""
    outputs_list, targets = _case(queries=(6, 6, 6), counts=(4, 2, 3))
    matcher = HungarianMatcher(**MASK_DINO_WEIGHTS, num_points=32)
    for target in targets:
        target["masks"] = target["masks"].float()
    coords = [[torch.rand(1, 32, 2) for _ in targets] for _ in outputs_list]
    keys = ("pred_logits", "pred_boxes", "pred_masks")
    stacked = {k: torch.stack([outputs[k] for outputs in outputs_list]) for k in keys}
    block = matcher._block_cost(matcher.costs, stacked, targets, coords)
    assert block.shape == (3, 3, 6, 9)
    for layer, outputs in enumerate(outputs_list):
        start = 0
        for image, target in enumerate(targets):
            alone = {k: outputs[k][image][None, None] for k in keys}
            cost = matcher._block_cost(matcher.costs, alone, [target], [[coords[layer][image]]])
            stop = start + len(target["labels"])
            torch.testing.assert_close(
                block[layer, image, :, start:stop], cost[0, 0], rtol=1e-6, atol=1e-6
            )
            start = stop


def test_images_share_a_step_within_the_limit_and_mask_size():
    matcher = HungarianMatcher(**MASK_DINO_WEIGHTS, num_points=16, max_batch_points=2 * 7 * 16 * 3)
    outputs = _outputs(4, 7)
    targets = _targets((3, 0, 5, 7))
    # two outputs: 2 x 7 x 16 samples per image -> three images per step; T bounds it too
    assert matcher._image_sets([0, 1], outputs, targets, [0, 2, 3], True) == [[0, 2, 3]]
    assert matcher._image_sets([0, 1, 2], outputs, targets, [0, 2, 3], True) == [[0, 2], [3]]
    targets[3]["masks"] = targets[3]["masks"][:, :8]  # another mask size: its own step
    assert matcher._image_sets([0, 1], outputs, targets, [0, 2, 3], True) == [[0, 2], [3]]
    boxes_only = HungarianMatcher(**BOX_WEIGHTS, max_batch_points=2 * 7 * 8)
    # without mask points only the [L, S, Q, T] costs count: 2 x 1 x 7 x 8 fits, 2 x 2 x 7 x 8 not
    assert boxes_only._image_sets([0, 1], outputs, targets, [0, 2], False) == [[0], [2]]


def test_random_draws_in_per_output_order(monkeypatch):
    """Same draws, same order, as one call per output: output by output, image by image."""
    outputs_list, targets = _case()
    matcher = HungarianMatcher(**MASK_DINO_WEIGHTS, num_points=16)
    real_rand, log = torch.rand, []

    def logged_rand(*args, **kwargs):
        values = real_rand(*args, **kwargs)
        log.append((tuple(values.shape), float(values.double().sum())))
        return values

    monkeypatch.setattr(torch, "rand", logged_rand)
    torch.manual_seed(2)
    many = matcher.match_many(outputs_list, targets)
    many_log, many_state = list(log), torch.get_rng_state()
    log.clear()
    torch.manual_seed(2)
    forward = [matcher(outputs, targets) for outputs in outputs_list]
    assert many_log == log
    assert len(log) == 4 * 3  # 4 outputs x 3 images with targets, none for the empty image
    assert all(shape == (1, 16, 2) for shape, _ in log)
    assert torch.equal(many_state, torch.get_rng_state())
    for ours, per_output in zip(many, forward):
        _assert_same(ours, per_output)
    # with a generator, every draw comes from it (same sequence as per-output calls)
    state = torch.get_rng_state()
    a = matcher.match_many(outputs_list, targets, generator=torch.Generator().manual_seed(4))
    generator = torch.Generator().manual_seed(4)
    b = [matcher(outputs, targets, generator=generator) for outputs in outputs_list]
    assert torch.equal(state, torch.get_rng_state())
    for ours, per_output in zip(a, b):
        _assert_same(ours, per_output)


def test_non_finite_costs_one_warning_same_assignment():
    outputs_list, targets = _case(counts=(3, 2))
    outputs_list[2]["pred_boxes"][1, 4] = float("nan")  # output 2, image 1, query 4
    outputs_list[3]["pred_logits"][0, 0] = float("nan")  # output 3, image 0, query 0
    matcher = HungarianMatcher(**MASK_DINO_WEIGHTS, num_points=16)
    torch.manual_seed(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        many = matcher.match_many(outputs_list, targets)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    # one warning per matrix with non-finite entries, text unchanged
    assert len(messages) == 2 and all("NaN/inf entries" in m for m in messages)
    assert "has 2 NaN/inf entries" in messages[0]  # NaN box: row of 2 targets (output 2)
    assert "has 3 NaN/inf entries" in messages[1]  # NaN logit: row of 3 targets (output 3)
    torch.manual_seed(3)
    reference = [_reference_match(matcher, outputs, targets) for outputs in outputs_list]
    for ours, ref in zip(many, reference):
        _assert_same(ours, ref)
    assert 4 not in many[2][1][0].tolist()  # the NaN queries are never preferred
    assert 0 not in many[3][0][0].tolist()


def test_sanitize_matches_host_formula():
    from detrex_ext.modeling.match_blocks import _sanitize

    cost = torch.randn(3, 5, 4) * 10
    cost[0, 1, 2] = float("nan")
    cost[0, 3, 0] = float("-inf")
    cost[1, 0, 0] = float("inf")
    cost[2] = float("nan")  # nothing finite: replacements 1 and -1
    cost[2, 0, 0] = float("-inf")
    clean, num_bad = _sanitize(cost)
    assert num_bad.tolist() == [2, 1, 20]
    for layer in range(2):
        matrix = cost[layer]
        finite = torch.isfinite(matrix)
        high, low = matrix[finite].max().item(), matrix[finite].min().item()
        span = high - low + 1.0
        expected = torch.nan_to_num(matrix, nan=high + span, posinf=high + span, neginf=low - span)
        assert torch.equal(clean[layer], expected)
    assert clean[2, 0, 0].item() == -1.0 and (clean[2].flatten()[1:] == 1.0).all()


class _HostTransferLog:
    """CPU proxy of the CUDA synchronisation count: every way a tensor's values reach Python or
    numpy (``.cpu``, ``.numpy``, ``.item``, ``.tolist``, ``bool/int/float`` of a tensor,
    ``np.asarray``) is logged. On CUDA each of these (except ``.numpy`` of the copied tensor)
    would block the host until the device has finished."""

    METHODS = ("cpu", "numpy", "item", "tolist", "__bool__", "__int__", "__float__", "__array__")

    def __init__(self, monkeypatch):
        self.calls = []
        for name in self.METHODS:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name)))

    def _wrap(self, name, method):
        def logged(tensor, *args, **kwargs):
            result = method(tensor, *args, **kwargs)
            self.calls.append((name, tensor, result))
            return result

        return logged

    def assert_one_transfer(self):
        names = [name for name, _, _ in self.calls]
        assert names == ["cpu", "numpy"], names
        (_, _, copied), (_, source, _) = self.calls
        assert source is copied  # numpy() of the single copied buffer


@pytest.mark.parametrize("weights", [MASK_DINO_WEIGHTS, BOX_WEIGHTS], ids=["masks", "boxes"])
def test_exactly_one_host_transfer_per_call(monkeypatch, weights):
    outputs_list, targets = _case()
    outputs_list[1]["pred_boxes"][0, 0] = float("nan")  # sanitising must not read values either
    matcher = HungarianMatcher(**weights, num_points=16, max_batch_points=7 * 16)
    log = _HostTransferLog(monkeypatch)
    with pytest.warns(RuntimeWarning, match="NaN/inf"):
        indices = matcher.match_many(outputs_list, targets)
    log.assert_one_transfer()
    assert len(indices) == 4
    log.calls.clear()
    matcher(outputs_list[0], targets)  # forward: one transfer too
    log.assert_one_transfer()
    log.calls.clear()
    empty = matcher.match_many(outputs_list, _targets((0, 0, 0, 0)))
    assert log.calls == []  # nothing to solve: no transfer at all
    assert all(rows.numel() == 0 for out in empty for rows, _ in out)


def test_batch_size_mismatch_is_reported():
    outputs_list, targets = _case()
    matcher = HungarianMatcher(**BOX_WEIGHTS)
    with pytest.raises(ValueError, match="3 targets for a batch of 4"):
        matcher.match_many(outputs_list, targets[:3])
    with pytest.raises(ValueError, match="max_batch_points"):
        HungarianMatcher(max_batch_points=0)


def _load_official_weights_module():
    path = Path(__file__).parents[1] / "maskdino" / "official_weights.py"
    spec = importlib.util.spec_from_file_location("_matcher_batched_official_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_criterion_matches_up_front_with_same_losses(monkeypatch):
    """Under the fidelity replay (draws fixed by kind, shape and occurrence) the criterion's
    losses are bit-identical to the former order (match an output, then its losses), and all
    outputs are matched by one ``match_many`` call."""
    ow = _load_official_weights_module()
    torch.manual_seed(5)
    counts = (3, 2)
    main = _outputs(2, 6, classes=4)
    main["aux_outputs"] = [_outputs(2, 6, classes=4) for _ in range(3)]
    main["interm_outputs"] = _outputs(2, 6, classes=4)
    targets = _targets(counts, classes=4, mask_size=(32, 40))
    for t in targets:
        t["masks"] = t["masks"].float()
    matcher = HungarianMatcher(**MASK_DINO_WEIGHTS, num_points=24)
    criterion = SetCriterion(num_classes=4, matcher=matcher, weight_dict={}, num_points=24, dn="no")
    with ow.DeterministicRandomDraws() as former_draws:
        expected = {}
        named = [("", main)] + [(f"_{i}", a) for i, a in enumerate(main["aux_outputs"])]
        for suffix, out in named + [("_interm", main["interm_outputs"])]:
            indices = _reference_match(matcher, out, targets)
            expected.update(criterion._losses(criterion.losses, out, targets, indices, 5.0, suffix))
    calls = []
    match_many = matcher.match_many
    monkeypatch.setattr(
        matcher, "match_many", lambda *a, **k: calls.append(len(a[0])) or match_many(*a, **k)
    )
    with ow.DeterministicRandomDraws() as draws:
        losses = criterion(main, targets)
    assert calls == [5]  # final, 3 aux, interm in one call
    assert ow.signature_counts(draws.log) == ow.signature_counts(former_draws.log)
    assert draws.log[0]["shape"] == [1, 24, 2] and len(draws.log) > 10
    assert sorted(losses) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(losses[key], value), key
    assert np.isfinite([v.item() for v in losses.values()]).all()


def test_cpu_default_batches_small_outputs_only():
    """CPU default step: all outputs of a small model at once, one output of a large one per step
    (the cache-sized bound of 2**18 values per float32 temporary)."""
    matcher = HungarianMatcher(**MASK_DINO_WEIGHTS, num_points=256)
    small = {"pred_masks": torch.zeros(2, 20, 1, 1)}  # 20 x 256 = 5120 values per output
    assert matcher._chunks(list(range(5)), small, True) == [[0, 1, 2, 3, 4]]
    assert matcher._chunks(list(range(5)), small, False) == [[0, 1, 2, 3, 4]]
    many = {"pred_masks": torch.zeros(2, 400, 1, 1)}  # 102400 values: two fit in 2**18
    assert matcher._chunks(list(range(5)), many, True) == [[0, 1], [2, 3], [4]]
    large = HungarianMatcher(**MASK_DINO_WEIGHTS, num_points=12544)
    r50 = {"pred_masks": torch.zeros(2, 300, 1, 1)}
    assert large._chunks(list(range(3)), r50, True) == [[0], [1], [2]]


def test_other_entries_of_an_output_are_ignored():
    """An output dict may carry non-prediction entries before its predictions (a model's full
    output: aux lists, metadata); the step sizes come from the predictions."""
    outputs_list, targets = _case()
    matcher = HungarianMatcher(**MASK_DINO_WEIGHTS, num_points=16)
    torch.manual_seed(1)
    plain = matcher.match_many(outputs_list, targets)
    decorated = [{"aux_outputs": [], "meta": None, **outputs} for outputs in outputs_list]
    torch.manual_seed(1)
    for ours, ref in zip(matcher.match_many(decorated, targets), plain):
        _assert_same(ours, ref)
