"""Denoising (DN) query generation of DN-DETR, DINO (contrastive) and Mask DINO.

During training, noised copies of the ground truth are fed to the decoder as extra queries that
must reconstruct their object. Copies are arranged group-major: copy c of GT j of image b sits in
slot ``c * max_objects + j`` of image b's DN part (``max_objects`` = the largest GT count in the
batch); slots of images with fewer objects stay zero. A group is one copy (plain) or a positive and
a negative copy (contrastive). The decoder input is ``[DN part (pad_size); matching queries]`` and
its self-attention mask keeps groups from seeing each other and the matching queries from seeing
any DN query, while DN queries may see the matching queries.

Mask DINO: ``DenoisingQueryGenerator(num_classes, num_dn_queries=100, label_noise_prob=0.2,
box_noise_scale=0.4)`` (0.2 = noise_scale * 0.5). DINO: ``num_dn_queries=2 * dn_number,
label_noise_prob=0.25, box_noise_scale=1.0, box_noise_mode="corners", contrastive=True,
min_num_groups=1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, inverse_sigmoid

__all__ = ["DenoisingQueries", "DenoisingQueryGenerator", "denoising_attention_mask"]

BOX_NOISE_MODES = ("center_size", "corners")


@dataclass
class DenoisingQueries:
    """The DN part of a decoder's input and what its loss needs.

    Attributes:
        content: ``[B, pad_size, D]`` content queries (label embeddings; zeros in empty slots).
        anchor_logits: ``[B, pad_size, 4]`` ``inverse_sigmoid`` of the noised cxcywh boxes
            (0 in empty slots, i.e. the box (0.5, 0.5, 0.5, 0.5)).
        attn_mask: ``[pad_size + Q, pad_size + Q]`` bool self-attention mask, True = blocked.
        pad_size: DN queries per image, ``num_groups * group_size``.
        num_groups: number of DN groups.
        group_size: slots per group (``max_objects``, doubled when contrastive).
        max_objects: largest GT count in the batch.
        indices: per image ``(dn_slot_idx [K], gt_idx [K])`` int64 on CPU, K = num_groups * n_b:
            the positive DN queries and the GT each reconstructs (matcher output format).
        noisy_labels: ``[B, pad_size]`` int64 noised labels, -1 in empty slots.
        noisy_boxes: ``[B, pad_size, 4]`` noised cxcywh boxes in [0, 1], 0 in empty slots.
        positive: ``[B, pad_size]`` bool, True for positive (reconstruction) DN queries.
    """

    content: torch.Tensor
    anchor_logits: torch.Tensor
    attn_mask: torch.Tensor
    pad_size: int
    num_groups: int
    group_size: int
    max_objects: int
    indices: list[tuple[torch.Tensor, torch.Tensor]]
    noisy_labels: torch.Tensor
    noisy_boxes: torch.Tensor
    positive: torch.Tensor

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, pad_size + Q, ...]`` decoder outputs -> (DN part, matching part) along axis 1."""
        return x[:, : self.pad_size], x[:, self.pad_size :]


def denoising_attention_mask(
    pad_size: int, group_size: int, num_queries: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Self-attention mask for ``[pad_size DN queries; num_queries matching queries]``.

    Returns:
        ``[pad_size + num_queries, pad_size + num_queries]`` bool, True = may not attend:
        matching rows block every DN column; a DN row blocks DN columns of other groups
        (``group_size`` consecutive slots form a group); DN rows see all matching queries.
    """
    total = pad_size + num_queries
    mask = torch.zeros(total, total, dtype=torch.bool, device=device)
    mask[pad_size:, :pad_size] = True
    if pad_size > 0:
        group = torch.arange(pad_size, device=device) // group_size
        mask[:pad_size, :pad_size] = group[:, None] != group[None, :]
    return mask


class DenoisingQueryGenerator:
    """Builds noised GT queries, their layout and attention mask for one training batch.

    Args:
        num_classes: replacement labels are drawn uniformly from ``[0, num_classes)``.
        num_dn_queries: budget of DN queries per image; ``num_groups = num_dn_queries //
            group_size`` (unless ``num_groups`` is given).
        num_groups: fixed number of groups instead of the budget rule.
        min_num_groups: lower bound on the group count. With 0 (Mask DINO), DN is skipped (the
            generator returns None) when the largest GT count exceeds the budget.
        label_noise_prob: probability that a DN query's label is replaced by a uniformly random
            class (which may equal the original).
        box_noise_scale: noise magnitude lambda; 0 disables box noise.
        box_noise_mode: ``"center_size"`` (DN-DETR / Mask DINO: cxcywh += U(-1, 1) *
            (w/2, h/2, w, h) * lambda) or ``"corners"`` (DINO: each xyxy corner moves by
            s * u * (w/2, h/2) * lambda with a random sign s).
        contrastive: add a negative copy per group (DINO's CDN): its noise magnitude u is in
            [1, 2) instead of [0, 1); negatives get no reconstruction target.

    Call with the targets (``labels [n_b]`` int64, ``boxes [n_b, 4]`` normalised cxcywh), the
    number of matching queries and the label embedding; see ``__call__``.
    """

    def __init__(
        self,
        num_classes: int,
        num_dn_queries: int = 100,
        num_groups: int | None = None,
        min_num_groups: int = 0,
        label_noise_prob: float = 0.2,
        box_noise_scale: float = 0.4,
        box_noise_mode: str = "center_size",
        contrastive: bool = False,
    ) -> None:
        if box_noise_mode not in BOX_NOISE_MODES:
            raise ValueError(
                f"box_noise_mode must be one of {BOX_NOISE_MODES}, got {box_noise_mode!r}"
            )
        if not 0 <= label_noise_prob <= 1:
            raise ValueError(f"label_noise_prob must be in [0, 1], got {label_noise_prob}")
        self.num_classes = num_classes
        self.num_dn_queries = num_dn_queries
        self.num_groups = num_groups
        self.min_num_groups = min_num_groups
        self.label_noise_prob = label_noise_prob
        self.box_noise_scale = box_noise_scale
        self.box_noise_mode = box_noise_mode
        self.contrastive = contrastive

    def _group_count(self, max_objects: int) -> int:
        copies = 2 if self.contrastive else 1
        if self.num_groups is not None:
            groups = self.num_groups
        else:
            groups = self.num_dn_queries // (max_objects * copies)
        return max(groups, self.min_num_groups)

    def _noise_labels(self, labels: torch.Tensor, generator) -> torch.Tensor:
        if self.label_noise_prob <= 0:
            return labels
        draw = torch.rand(labels.shape, device=labels.device, generator=generator)
        chosen = torch.nonzero(draw < self.label_noise_prob).view(-1)
        replacement = torch.randint(
            0, self.num_classes, chosen.shape, device=labels.device, generator=generator
        )
        return labels.scatter(0, chosen, replacement)

    def _noise_magnitudes(self, boxes: torch.Tensor, negative: torch.Tensor, generator):
        """Signed factors in (-1, 1) for positives and (-2, -1] U [1, 2) for negatives."""
        sign = torch.randint(
            0, 2, boxes.shape, device=boxes.device, generator=generator, dtype=boxes.dtype
        )
        sign = sign * 2.0 - 1.0
        magnitude = torch.rand(
            boxes.shape, device=boxes.device, generator=generator, dtype=boxes.dtype
        )
        return (magnitude + negative[:, None].to(boxes.dtype)) * sign

    def _noise_boxes(self, boxes: torch.Tensor, negative: torch.Tensor, generator) -> torch.Tensor:
        if self.box_noise_scale <= 0:
            return boxes
        half_size = boxes[:, 2:] / 2
        if self.box_noise_mode == "center_size":
            diff = torch.cat([half_size, boxes[:, 2:]], dim=1)
            if self.contrastive:
                factors = self._noise_magnitudes(boxes, negative, generator)
            else:
                factors = torch.rand(
                    boxes.shape, device=boxes.device, generator=generator, dtype=boxes.dtype
                )
                factors = factors * 2 - 1.0
            return (boxes + factors * diff * self.box_noise_scale).clamp(min=0.0, max=1.0)
        corners = box_cxcywh_to_xyxy(boxes)
        diff = torch.cat([half_size, half_size], dim=1)
        factors = self._noise_magnitudes(boxes, negative, generator)
        corners = (corners + factors * diff * self.box_noise_scale).clamp(min=0.0, max=1.0)
        return box_xyxy_to_cxcywh(corners)

    def __call__(
        self,
        targets: list[dict[str, torch.Tensor]],
        num_queries: int,
        label_embedding: Callable[[torch.Tensor], torch.Tensor],
        generator: torch.Generator | None = None,
    ) -> DenoisingQueries | None:
        """Generate the DN queries of a batch.

        Args:
            targets: B dicts with ``labels [n_b]`` (int64) and ``boxes [n_b, 4]`` (cxcywh in
                [0, 1]); n_b may differ between images and be 0.
            num_queries: Q, the matching queries that follow the DN part in the decoder.
            label_embedding: maps labels ``[N]`` to content vectors ``[N, D]`` (e.g. an
                ``nn.Embedding``); gradients flow into it.
            generator: random generator (default: the global one, consumed in the order of the
                original implementations).

        Returns:
            A ``DenoisingQueries``, or ``None`` when there is no GT in the batch or no group fits
            the budget (DN is then skipped for this batch).
        """
        counts = [len(t["labels"]) for t in targets]
        max_objects = max(counts, default=0)
        if max_objects == 0:
            return None
        num_groups = self._group_count(max_objects)
        if num_groups <= 0:
            return None
        copies_per_group = 2 if self.contrastive else 1
        num_copies = num_groups * copies_per_group
        group_size = max_objects * copies_per_group
        pad_size = num_groups * group_size

        labels = torch.cat([t["labels"] for t in targets]).long()
        boxes = torch.cat([t["boxes"] for t in targets])
        device = boxes.device
        batch_idx = torch.cat(
            [torch.full((n,), b, dtype=torch.long, device=device) for b, n in enumerate(counts)]
        )
        in_image = torch.cat([torch.arange(n, device=device) for n in counts])
        copy_idx = torch.arange(num_copies, device=device).repeat_interleave(len(labels))
        negative = (
            (copy_idx % 2 == 1)
            if self.contrastive
            else torch.zeros_like(copy_idx, dtype=torch.bool)
        )

        noisy_labels = self._noise_labels(labels.repeat(num_copies), generator)
        noisy_boxes = self._noise_boxes(boxes.repeat(num_copies, 1), negative, generator)
        embedded = label_embedding(noisy_labels)

        batch_size = len(targets)
        rows = batch_idx.repeat(num_copies)
        slots = in_image.repeat(num_copies) + copy_idx * max_objects
        content = embedded.new_zeros(batch_size, pad_size, embedded.shape[-1])
        content[rows, slots] = embedded
        anchor_logits = boxes.new_zeros(batch_size, pad_size, 4)
        anchor_logits[rows, slots] = inverse_sigmoid(noisy_boxes)
        padded_labels = torch.full((batch_size, pad_size), -1, dtype=torch.long, device=device)
        padded_labels[rows, slots] = noisy_labels
        padded_boxes = boxes.new_zeros(batch_size, pad_size, 4)
        padded_boxes[rows, slots] = noisy_boxes
        positive = torch.zeros(batch_size, pad_size, dtype=torch.bool, device=device)
        positive[rows, slots] = ~negative

        group_starts = torch.arange(num_groups) * group_size
        indices = []
        for n in counts:
            gt = torch.arange(n)
            indices.append(((group_starts[:, None] + gt[None, :]).flatten(), gt.repeat(num_groups)))

        return DenoisingQueries(
            content=content,
            anchor_logits=anchor_logits,
            attn_mask=denoising_attention_mask(pad_size, group_size, num_queries, device),
            pad_size=pad_size,
            num_groups=num_groups,
            group_size=group_size,
            max_objects=max_objects,
            indices=indices,
            noisy_labels=padded_labels,
            noisy_boxes=padded_boxes,
            positive=positive,
        )
