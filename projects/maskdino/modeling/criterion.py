"""SetCriterion: Mask DINO's losses (spec section 5).

For every prediction (final, each auxiliary one, the query-selection "interm" one) the matching
queries are assigned to ground truths by the Hungarian matcher, then supervised with

* `labels`: sigmoid focal loss over C classes (or softmax CE over C + 1 with `semantic_ce_loss`),
* `masks`: point-sampled BCE and dice (PointRend importance sampling),
* `boxes`: L1 and GIoU on normalised cxcywh boxes,

all normalised by the number of ground truths (summed over processes). Denoising predictions use
the fixed assignment "slot g * G + j <-> object j" and are normalised by num_boxes * groups.

Official reference: IDEA-Research/MaskDINO `maskdino/modeling/criterion.py`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detrex_ext.modeling import (
    paired_giou_loss,
    point_sampled_mask_losses_many,
    reduce_num_objects,
    sigmoid_focal_loss,
)

__all__ = ["SetCriterion"]

LOSS_NAMES = {
    "labels": ("loss_ce",),
    "masks": ("loss_mask", "loss_dice"),
    "boxes": ("loss_bbox", "loss_giou"),
}

Indices = list[tuple[Tensor, Tensor]]


class SetCriterion(nn.Module):
    """Mask DINO's set criterion.

    Args:
        num_classes: C.
        matcher: a callable `(outputs, targets) -> [(pred_idx, gt_idx)] per image`; its
            `match_many(outputs_list, targets)` is used when present (one host sync per step).
        weight_dict: loss name -> weight (see `maskdino_weight_dict`); the model multiplies and
            filters the losses with it.
        eos_coef: weight of the "no object" class in the CE loss.
        losses: loss groups for matched predictions, from "labels", "masks", "boxes".
        num_points: points per mask for the mask losses (112 * 112).
        oversample_ratio, importance_sample_ratio: PointRend sampling parameters.
        dn: "no", "standard" or "seg".
        dn_losses: loss groups for the denoising predictions.
        panoptic_on: box losses on thing classes only (class id < `num_thing_classes`).
        semantic_ce_loss: softmax CE class loss with C + 1 logits.
        num_thing_classes: ids below it are things (80 for COCO), for `panoptic_on`.
        giou_eps: epsilon of the GIoU loss (the official box ops use 1e-6).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        matcher: nn.Module,
        weight_dict: dict[str, float],
        eos_coef: float = 0.1,
        losses: list[str] = ("labels", "masks", "boxes"),
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        dn: str = "seg",
        dn_losses: list[str] = ("labels", "masks", "boxes"),
        panoptic_on: bool = False,
        semantic_ce_loss: bool = False,
        num_thing_classes: int = 80,
        giou_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        for name in list(losses) + list(dn_losses):
            if name not in LOSS_NAMES:
                raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSS_NAMES)}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.eos_coef = eos_coef
        self.losses = list(losses)
        self.dn = dn
        self.dn_losses = list(dn_losses)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.focal_alpha = 0.25
        self.panoptic_on = panoptic_on
        self.semantic_ce_loss = semantic_ce_loss
        self.num_thing_classes = num_thing_classes
        self.giou_eps = giou_eps
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)
        self.register_load_state_dict_pre_hook(_keep_empty_weight)

    # ------------------------------------------------------------------ single losses
    @staticmethod
    def _src_idx(indices: Indices) -> tuple[Tensor, Tensor]:
        matched = _as_matched(indices)
        return matched.batch, matched.query

    def _target_classes(self, logits: Tensor, targets: list[dict], indices: Indices) -> Tensor:
        """`[B, Q]` class of each query: its matched label, else C ("no object")."""
        matched = _as_matched(indices, targets)
        classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        classes[matched.batch, matched.query] = matched.targets.labels[matched.target]
        return classes

    def loss_labels(self, outputs: dict, targets: list[dict], indices: Indices, num_boxes) -> dict:
        """Sigmoid focal loss (alpha 0.25, gamma 2) over all queries x classes / num_boxes."""
        logits = outputs["pred_logits"].float()
        classes = self._target_classes(logits, targets, indices)
        onehot = torch.zeros(
            (*logits.shape[:2], logits.shape[2] + 1), dtype=logits.dtype, device=logits.device
        )
        onehot.scatter_(2, classes.unsqueeze(-1), 1)
        onehot = onehot[:, :, :-1]
        loss = sigmoid_focal_loss(logits, onehot, num_boxes, alpha=self.focal_alpha, gamma=2)
        return {"loss_ce": loss * logits.shape[1]}

    def loss_labels_ce(
        self, outputs: dict, targets: list[dict], indices: Indices, num_boxes
    ) -> dict:
        """Softmax CE over C + 1 logits, "no object" weighted by eos_coef (weighted mean)."""
        logits = outputs["pred_logits"].float()
        classes = self._target_classes(logits, targets, indices)
        return {"loss_ce": F.cross_entropy(logits.transpose(1, 2), classes, self.empty_weight)}

    def loss_boxes(self, outputs: dict, targets: list[dict], indices: Indices, num_boxes) -> dict:
        """L1 and 1 - GIoU of matched normalised cxcywh boxes, / num_boxes."""
        return self._box_losses([(outputs, indices, num_boxes, "")], targets)

    def loss_masks(self, outputs: dict, targets: list[dict], indices: Indices, num_boxes) -> dict:
        """Point-sampled BCE and dice of matched masks (PointRend sampling), / num_boxes."""
        return self._mask_losses([(outputs, indices, num_boxes, "")], targets)

    def get_loss(
        self, loss: str, outputs: dict, targets: list[dict], indices: Indices, num_boxes
    ) -> dict:
        if loss == "labels":
            fn = self.loss_labels_ce if self.semantic_ce_loss else self.loss_labels
        elif loss == "masks":
            fn = self.loss_masks
        else:
            fn = self.loss_boxes
        return fn(outputs, targets, indices, num_boxes)

    # ------------------------------------------------------------------ forward
    def _dn_zero_losses(self, suffix: str, device: torch.device) -> dict:
        names = [n for group in self.dn_losses for n in LOSS_NAMES[group]]
        return {f"{n}{suffix}": torch.zeros((), device=device) for n in names}

    def _losses(
        self, groups, outputs, targets, indices, num_boxes, suffix: str, deferred=None
    ) -> dict:
        """The losses of `groups` for one output. With a `deferred` dict of lists, the box and
        mask losses are left as None (keeping the keys' order) and their job is appended to
        `deferred["boxes"]` / `deferred["masks"]`, to be computed together with the other
        outputs' (`_box_losses`, `_mask_losses`)."""
        out = {}
        for loss in groups:
            if deferred is not None and loss in deferred:
                deferred[loss].append((outputs, indices, num_boxes, suffix))
                out.update(dict.fromkeys(LOSS_NAMES[loss]))
                continue
            out.update(self.get_loss(loss, outputs, targets, indices, num_boxes))
        return {k + suffix: v for k, v in out.items()}

    def _mask_losses(self, jobs: list, targets: list[dict]) -> dict:
        """`loss_mask` and `loss_dice` of several outputs in one pass (the matched masks of all
        `(outputs, indices, num_boxes, suffix)` jobs together, indexed into the batch's masks
        rather than copied out; the random points drawn job by job, in order, as one
        `loss_masks` call per output would draw them: the same values)."""
        matched = [_as_matched(indices, targets) for _, indices, _, _ in jobs]
        device = jobs[0][0]["pred_masks"].device
        results = point_sampled_mask_losses_many(
            [out["pred_masks"][m.batch, m.query] for (out, *_), m in zip(jobs, matched)],
            matched[0].targets.masks,
            [m.target.to(device) for m in matched],
            [num_boxes for _, _, num_boxes, _ in jobs],
            self.num_points,
            self.oversample_ratio,
            self.importance_sample_ratio,
        )
        return {f"{k}{job[3]}": v for job, losses in zip(jobs, results) for k, v in losses.items()}

    def _box_losses(self, jobs: list, targets: list[dict]) -> dict:
        """`loss_bbox` and `loss_giou` of several outputs in one pass: the matched boxes of all
        `(outputs, indices, num_boxes, suffix)` jobs are concatenated, the per-coordinate L1
        and per-pair GIoU terms computed once and summed job by job (each job's terms are a
        contiguous slice, summed as one job alone would be: the same values)."""
        matched = [_as_matched(indices, targets) for _, indices, _, _ in jobs]
        src = torch.cat(
            [out["pred_boxes"][m.batch, m.query] for (out, *_), m in zip(jobs, matched)]
        ).float()
        rows = torch.cat([m.target for m in matched])
        batch_targets = matched[0].targets
        tgt = batch_targets.boxes[rows]
        sizes = [len(m.target) for m in matched]
        if self.panoptic_on:
            isthing = batch_targets.labels[rows] < self.num_thing_classes
            job_ids = torch.repeat_interleave(torch.arange(len(jobs)), torch.tensor(sizes))
            sizes = torch.bincount(job_ids[isthing.cpu()], minlength=len(jobs)).tolist()
            src, tgt = src[isthing], tgt[isthing]
        l1 = F.l1_loss(src, tgt.to(src.dtype), reduction="none")
        giou = paired_giou_loss(src, tgt, eps=self.giou_eps)
        losses = {}
        for (_, _, num_boxes, suffix), l1_job, giou_job in zip(
            jobs, l1.split(sizes), giou.split(sizes)
        ):
            losses[f"loss_bbox{suffix}"] = l1_job.sum() / num_boxes
            losses[f"loss_giou{suffix}"] = giou_job.sum() / num_boxes
        return losses

    def _match_all(self, outputs: dict, targets: list[dict]) -> list[Indices]:
        """Assignments of the final, every auxiliary and the interm output, in that order.

        One `match_many` call (all cost matrices on the device, one host transfer) when the
        matcher has it, else one matcher call per output; either way the matcher's random draws
        come in the order final, aux 0.., interm, before any loss draws.
        """
        main = {k: v for k, v in outputs.items() if k not in ("aux_outputs", "interm_outputs")}
        to_match = [main, *outputs.get("aux_outputs", [])]
        if "interm_outputs" in outputs:
            to_match.append(outputs["interm_outputs"])
        match_many = getattr(self.matcher, "match_many", None)
        if match_many is not None:
            return match_many(to_match, targets)
        return [self.matcher(out, targets) for out in to_match]

    def forward(self, outputs: dict, targets: list[dict], dn_meta: dict | None = None) -> dict:
        """Compute every loss (unweighted).

        Args:
            outputs: the decoder outputs (`pred_logits`, `pred_masks`, `pred_boxes`,
                `aux_outputs`, optional `interm_outputs`).
            targets: per image `labels` `[n]`, `masks` `[n, H_pad, W_pad]`, `boxes` `[n, 4]`.
            dn_meta: the decoder's denoising record, or None.

        Returns:
            loss name -> scalar tensor: final (no suffix), `_dn`, `_{i}`, `_dn_{i}`, `_interm`.
        """
        device = outputs["pred_logits"].device
        use_dn = self.dn != "no" and dn_meta is not None
        if use_dn:
            scalar = dn_meta["scalar"]
            dn_out = dn_meta["output_known_lbs_bboxes"]
            # Fixed assignment: DN slot g * max_objects + j reconstructs ground truth j.
            dn_idx = dn_meta["indices"]  # wrapped below, once the targets are concatenated
        # matched[0]: final output, matched[1 + i]: aux i, matched[-1]: interm (when present)
        batch_targets = _BatchTargets(targets)
        matched = [_Matched(pairs, batch_targets) for pairs in self._match_all(outputs, targets)]
        indices = matched[0]
        if use_dn:
            dn_idx = _Matched(dn_idx, batch_targets)
        num_boxes = reduce_num_objects(sum(len(t["labels"]) for t in targets), device)

        deferred = {"boxes": [], "masks": []}  # loss jobs computed together at the end
        losses = self._losses(self.losses, outputs, targets, indices, num_boxes, "", deferred)
        if use_dn:
            losses.update(
                self._losses(
                    self.dn_losses, dn_out, targets, dn_idx, num_boxes * scalar, "_dn", deferred
                )
            )
        elif self.dn != "no":
            losses.update(self._dn_zero_losses("_dn", device))

        # Without interm outputs the pre-decoder DN prediction (aux 0) is not supervised.
        dn_start = 0 if "interm_outputs" in outputs else 1
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses.update(
                self._losses(
                    self.losses, aux, targets, matched[1 + i], num_boxes, f"_{i}", deferred
                )
            )
            if i < dn_start:
                continue
            if use_dn:
                losses.update(
                    self._losses(
                        self.dn_losses,
                        dn_out["aux_outputs"][i],
                        targets,
                        dn_idx,
                        num_boxes * scalar,
                        f"_dn_{i}",
                        deferred,
                    )
                )
            elif self.dn != "no":
                losses.update(self._dn_zero_losses(f"_dn_{i}", device))

        if "interm_outputs" in outputs:
            interm = outputs["interm_outputs"]
            losses.update(
                self._losses(
                    self.losses, interm, targets, matched[-1], num_boxes, "_interm", deferred
                )
            )
        if deferred["masks"]:  # the mask losses' draws: after the matcher's, in output order
            losses.update(self._mask_losses(deferred["masks"], targets))
        if deferred["boxes"]:
            losses.update(self._box_losses(deferred["boxes"], targets))
        return losses


class _BatchTargets:
    """The batch's targets concatenated once per step: `labels [T]`, `boxes [T, 4]`, `masks
    [T, H, W]` (None where absent) and `offsets` (the first row of each image)."""

    def __init__(self, targets: list[dict]) -> None:
        def cat(key: str) -> Tensor | None:
            if not targets or key not in targets[0]:
                return None
            return targets[0][key] if len(targets) == 1 else torch.cat([t[key] for t in targets])

        self.labels, self.boxes, self.masks = cat("labels"), cat("boxes"), cat("masks")
        counts = [len(t["labels"]) for t in targets]
        self.offsets = [sum(counts[:i]) for i in range(len(counts))]


class _Matched(list):
    """A matcher result (per image `(query_idx [K_b], target_idx [K_b])`, still usable as that
    list) with its flat index tensors, built once and shared by every loss of the output:
    `batch [K]` and `query [K]` index the predictions, `target [K]` the `_BatchTargets` rows."""

    def __init__(self, pairs: Indices, targets: _BatchTargets | None) -> None:
        super().__init__(pairs)
        self.targets = targets
        queries = [query for query, _ in pairs]
        device = queries[0].device if queries else torch.device("cpu")
        sizes = torch.tensor([len(query) for query in queries], device=device)
        image_ids = torch.arange(len(pairs), device=device)
        self.batch = torch.repeat_interleave(image_ids, sizes)
        self.query = torch.cat(queries) if queries else sizes.new_empty(0)
        self.target = None
        if targets is None:  # predictions' side only
            return
        offsets = torch.tensor(targets.offsets, dtype=torch.int64, device=device)
        target = torch.cat([target for _, target in pairs]) if pairs else sizes.new_empty(0)
        self.target = target + torch.repeat_interleave(offsets, sizes)


def _as_matched(indices: Indices, targets: list[dict] | None = None) -> _Matched:
    """`indices` with its flat forms (computed here when the caller passed a plain list; without
    `targets`, only the predictions' side)."""
    if isinstance(indices, _Matched):
        return indices
    return _Matched(indices, None if targets is None else _BatchTargets(targets))


def _keep_empty_weight(module, state_dict, prefix, *_args) -> None:
    """`empty_weight` is a constant of the config: fill it when a checkpoint lacks it."""
    state_dict.setdefault(prefix + "empty_weight", module.empty_weight.detach().clone())
