"""Denoising (DN) queries of Mask DINO, reproducing the official `prepare_for_dn` exactly.

Mask DINO's variant (spec section 4.4) differs from DINO's contrastive denoising:

* groups: `scalar = dn_num // max_b n_b` copies of all ground truths (no negatives); skipped when
  an image has no objects at all in the batch or more than `dn_num` objects (scalar == 0);
* labels: each DN query is flipped to a uniform random class with probability noise_scale / 2;
* boxes: cxcywh += U(-1, 1) * (w/2, h/2, w, h) * noise_scale, clamped to [0, 1];
* layout: per image `pad_size = G * scalar` slots (G = max_b n_b); object j of group g goes to slot
  g * G + j; unused slots stay zero (content 0, anchor logit 0);
* attention: matching queries cannot see DN queries; DN groups cannot see each other; DN queries
  see the matching queries.

The random draws happen in the official order (label flips, then the flipped labels, then box
noise), so a seeded run draws the same noise as the official code.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detrex_ext.layers import inverse_sigmoid

__all__ = ["MaskDINODenoising", "dn_attention_mask"]


def dn_attention_mask(single_pad: int, scalar: int, num_queries: int, device) -> Tensor:
    """Self-attention mask for `[DN (single_pad * scalar); matching (num_queries)]` queries.

    Returns:
        bool `[N, N]` with N = single_pad * scalar + num_queries; True means "blocked".
    """
    pad_size = single_pad * scalar
    size = pad_size + num_queries
    idx = torch.arange(size, device=device)
    group = torch.div(idx, single_pad, rounding_mode="floor")
    is_dn = idx < pad_size
    # DN rows: block DN columns of other groups. Matching rows: block all DN columns.
    dn_rows = is_dn[:, None] & is_dn[None, :] & (group[:, None] != group[None, :])
    match_rows = ~is_dn[:, None] & is_dn[None, :]
    return dn_rows | match_rows


class MaskDINODenoising(nn.Module):
    """Builds the noised DN queries for a training batch (no parameters).

    Args:
        num_classes: C, the range of random replacement labels.
        hidden_dim: D, width of the content queries.
        dn_num: DN query budget per image.
        noise_scale: box noise scale (label flip probability = noise_scale / 2).
    """

    def __init__(self, *, num_classes: int, hidden_dim: int, dn_num: int, noise_scale: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.hidden_dim = hidden_dim
        self.dn_num = dn_num
        self.noise_scale = noise_scale

    def forward(self, targets: list[dict], label_enc: nn.Embedding):
        """Noised queries for `targets`.

        Args:
            targets: per image `labels` int64 `[n_b]` and `boxes` `[n_b, 4]` (normalised cxcywh).
            label_enc: the class embedding that turns (noised) labels into content queries.

        Returns:
            None when no DN groups fit, else `(content [B, pad, D], anchors [B, pad, 4] (logits),
            meta)` where meta holds `pad_size`, `scalar`, `single_pad` and `known_num`.
        """
        known_num = [int(t["labels"].shape[0]) for t in targets]
        max_num = max(known_num) if known_num else 0
        scalar = self.dn_num // max_num if max_num > 0 else 0
        if scalar == 0:
            return None
        device = targets[0]["labels"].device
        batch = len(targets)
        labels = torch.cat([t["labels"] for t in targets]).repeat(scalar, 1).view(-1)
        boxes = torch.cat([t["boxes"] for t in targets]).repeat(scalar, 1)
        batch_idx = torch.cat(
            [torch.full((n,), i, dtype=torch.long, device=device) for i, n in enumerate(known_num)]
        ).repeat(scalar, 1).view(-1)

        noised_labels = labels.clone()
        noised_boxes = boxes.clone()
        if self.noise_scale > 0:
            p = torch.rand_like(noised_labels.float())
            chosen = torch.nonzero(p < (self.noise_scale * 0.5)).view(-1)
            new_label = torch.randint_like(chosen, 0, self.num_classes)
            noised_labels.scatter_(0, chosen, new_label)

            diff = torch.cat([noised_boxes[:, 2:] / 2, noised_boxes[:, 2:]], dim=1)
            noise = torch.mul(torch.rand_like(noised_boxes) * 2 - 1.0, diff) * self.noise_scale
            noised_boxes = (noised_boxes + noise).clamp(min=0.0, max=1.0)

        label_embed = label_enc(noised_labels.long())
        box_embed = inverse_sigmoid(noised_boxes)

        single_pad = max_num
        pad_size = single_pad * scalar
        slot_in_image = torch.cat([torch.arange(n, device=device) for n in known_num])
        slots = torch.cat([slot_in_image + single_pad * g for g in range(scalar)]).long()

        content = torch.zeros(batch, pad_size, self.hidden_dim, device=device, dtype=label_embed.dtype)
        anchors = torch.zeros(batch, pad_size, 4, device=device, dtype=box_embed.dtype)
        content = content.index_put((batch_idx, slots), label_embed)
        anchors = anchors.index_put((batch_idx, slots), box_embed)
        meta = {
            "pad_size": pad_size,
            "scalar": scalar,
            "single_pad": single_pad,
            "known_num": known_num,
            "known_lbs_bboxes": (labels, boxes),
        }
        return content, anchors, meta
