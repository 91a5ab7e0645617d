"""MaskDINODecoder: query selection, denoising queries, decoder and prediction heads.

Official reference: IDEA-Research/MaskDINO `maskdino/modeling/transformer_decoder/maskdino_decoder.py`.
Attribute names are the official ones, including the aliases the official module registers, so a
released state_dict loads with an identity key map:

* `_bbox_embed` is the one box MLP; `bbox_embed` (a ModuleList of `dec_layers` references to it)
  and `decoder.bbox_embed` (the same ModuleList) are aliases.
* `decoder_norm` and `decoder.norm` are the same LayerNorm.

Prediction index convention (10 predictions for 9 layers): index 0 is the decoder input
("initial prediction"), index l + 1 is decoder layer l.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detrex_ext.layers import MLP, Conv2d, DenoisingQueryGenerator, inverse_sigmoid

from .checkpoint import decoder_load_pre_hook
from .decoder_layers import TransformerDecoder
from .levels import flatten_levels
from .mask_product import query_masks
from .query_selection import encoder_output_proposals, masks_to_anchor_boxes

__all__ = ["MaskDINODecoder"]

BOX_INIT_TYPES = ("no", "bitmask", "mask2box")

_OFFICIAL_OPTIONS = {
    "mask_classification": True,
    "activation": "relu",
    "return_intermediate_dec": True,
    "dec_layer_share": False,
}


def _check_official_options(*values) -> None:
    for (name, supported), value in zip(_OFFICIAL_OPTIONS.items(), values):
        if value != supported:
            raise ValueError(
                f"MaskDINODecoder supports only {name}={supported!r} (the official Mask DINO "
                f"setting), got {value!r}"
            )


DN_TYPES = ("no", "standard", "seg")


class MaskDINODecoder(nn.Module):
    """The Mask DINO transformer decoder ("predictor").

    Args:
        in_channels: channels of the multi-scale features (= D when no input projection).
        num_classes: number of classes C.
        hidden_dim: query width D.
        num_queries: number of matching queries Q (also the top-k of query selection).
        nheads: attention heads of the decoder layers (official: a fixed 8).
        dim_feedforward: FFN width of the decoder layers.
        dec_layers: number of decoder layers.
        mask_dim: channels of the mask embedding (= channels of `mask_features`).
        enforce_input_project: add 1x1 input projections even when in_channels == hidden_dim.
        two_stage: select queries from encoder tokens (else learned queries).
        dn: denoising mode, "no", "standard" (labels + boxes) or "seg" (also masks).
        noise_scale: box noise scale; the label flip probability is noise_scale / 2.
        dn_num: DN query budget per image (groups = dn_num // max #GT).
        initialize_box_type: "no", "bitmask" or "mask2box" (mask-enhanced anchors).
        initial_pred: also predict from the decoder input (prediction index 0).
        learn_tgt: learned content queries even in two-stage mode.
        total_num_feature_levels: L, levels of the memory.
        dropout: dropout of the decoder layers (official: 0).
        dec_n_points: sampling points per head and level.
        query_dim: 4 (anchor boxes).
        semantic_ce_loss: the class head has C + 1 outputs (softmax CE "no object" column).
        activation_checkpointing: recompute each decoder layer in the backward (training only);
            every per-layer prediction is still produced for the auxiliary losses.
        transformer_autocast: the decoder layers run under the caller's autocast (bf16
            linears/attention, fp32 sampling coordinates) instead of fp32; box refinement,
            reference points and the prediction heads are unchanged.
        mask_classification, activation, nhead, return_intermediate_dec, dec_layer_share: the
            official (and detrex) options, accepted so their configs port: the official values
            (True, "relu", the head count, True, False) are the only ones supported; ``nhead``,
            when given, is the head count of the decoder layers.
    """

    def __init__(
        self,
        *,
        in_channels: int = 256,
        num_classes: int,
        hidden_dim: int = 256,
        num_queries: int = 300,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dec_layers: int = 9,
        mask_dim: int = 256,
        enforce_input_project: bool = False,
        two_stage: bool = True,
        dn: str = "seg",
        noise_scale: float = 0.4,
        dn_num: int = 100,
        initialize_box_type: str = "mask2box",
        initial_pred: bool = True,
        learn_tgt: bool = False,
        total_num_feature_levels: int = 4,
        dropout: float = 0.0,
        dec_n_points: int = 4,
        query_dim: int = 4,
        semantic_ce_loss: bool = False,
        activation_checkpointing: bool = False,
        transformer_autocast: bool = False,
        mask_classification: bool = True,
        activation: str = "relu",
        nhead: int | None = None,
        return_intermediate_dec: bool = True,
        dec_layer_share: bool = False,
    ) -> None:
        super().__init__()
        _check_official_options(mask_classification, activation, return_intermediate_dec,
                                dec_layer_share)  # fmt: skip
        if nhead is not None:  # the official decoder layers use `nhead` (its `nheads` is unused)
            nheads = nhead
        if initialize_box_type not in BOX_INIT_TYPES:
            raise ValueError(
                f"initialize_box_type must be one of {BOX_INIT_TYPES}, got {initialize_box_type!r}"
            )
        if dn not in DN_TYPES:
            raise ValueError(f"dn must be one of {DN_TYPES}, got {dn!r}")
        if initialize_box_type != "no" and not (two_stage and initial_pred):
            raise ValueError("mask-enhanced box init needs two_stage=True and initial_pred=True")
        self.num_classes = num_classes
        self.hidden_dim = hidden_dim
        self.num_queries = num_queries
        self.num_layers = dec_layers
        self.num_feature_levels = total_num_feature_levels
        self.two_stage = two_stage
        self.initial_pred = initial_pred
        self.learn_tgt = learn_tgt
        self.initialize_box_type = initialize_box_type
        self.dn = dn
        self.semantic_ce_loss = semantic_ce_loss

        if not two_stage or learn_tgt:
            self.query_feat = nn.Embedding(num_queries, hidden_dim)
        if not two_stage and initialize_box_type == "no":
            self.query_embed = nn.Embedding(num_queries, 4)
        if two_stage:
            self.enc_output = nn.Linear(hidden_dim, hidden_dim)
            self.enc_output_norm = nn.LayerNorm(hidden_dim)

        self.input_proj = nn.ModuleList()
        for _ in range(total_num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                proj = Conv2d(in_channels, hidden_dim, kernel_size=1)
                nn.init.kaiming_uniform_(proj.weight, a=1)
                nn.init.constant_(proj.bias, 0)
                self.input_proj.append(proj)
            else:
                self.input_proj.append(nn.Sequential())

        self.class_embed = nn.Linear(
            hidden_dim, num_classes + 1 if semantic_ce_loss else num_classes
        )
        self.label_enc = nn.Embedding(num_classes, hidden_dim)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.decoder = TransformerDecoder(
            num_layers=dec_layers,
            norm=self.decoder_norm,
            d_model=hidden_dim,
            query_dim=query_dim,
            d_ffn=dim_feedforward,
            dropout=dropout,
            n_levels=total_num_feature_levels,
            n_heads=nheads,
            n_points=dec_n_points,
            activation_checkpointing=activation_checkpointing,
            transformer_autocast=transformer_autocast,
        )
        self._bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        nn.init.constant_(self._bbox_embed.layers[-1].weight, 0)
        nn.init.constant_(self._bbox_embed.layers[-1].bias, 0)
        self.bbox_embed = nn.ModuleList([self._bbox_embed for _ in range(dec_layers)])
        self.decoder.bbox_embed = self.bbox_embed
        # Checkpoints may carry only some aliases of the box MLP / decoder norm: fill the rest.
        self.register_load_state_dict_pre_hook(decoder_load_pre_hook)

        # Mask DINO's DN variant: label flips with probability noise_scale / 2, center/size box
        # noise, no negatives, skipped when a batch image has more than dn_num objects.
        self.dn_generator = DenoisingQueryGenerator(
            num_classes=num_classes,
            num_dn_queries=dn_num,
            label_noise_prob=noise_scale * 0.5,
            box_noise_scale=noise_scale,
        )

    def set_num_classes(self, num_classes: int) -> None:
        """Rebuild the class-dependent layers for ``num_classes`` classes, freshly initialised:
        the class head (``class_embed``), the denoising label embedding (``label_enc``) and
        the denoising label range; every other weight is kept."""
        old_head, old_labels = self.class_embed, self.label_enc
        kwargs = {"device": old_head.weight.device, "dtype": old_head.weight.dtype}
        outputs = num_classes + 1 if self.semantic_ce_loss else num_classes
        self.class_embed = nn.Linear(old_head.in_features, outputs, **kwargs)
        self.label_enc = nn.Embedding(num_classes, old_labels.embedding_dim, **kwargs)
        self.dn_generator.num_classes = num_classes
        self.num_classes = num_classes

    # ------------------------------------------------------------------ heads
    def forward_prediction_heads(
        self, output: Tensor, mask_features: Tensor, pred_mask: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """Class logits and mask logits from queries.

        `decoder_norm` is applied here even to decoder outputs that are already normed (the
        official double LayerNorm).

        Args:
            output: `[B, Nq, D]` queries.
            mask_features: `[B, mask_dim, H/4, W/4]`.
            pred_mask: compute masks (skipped for intermediate layers at inference).

        Returns:
            logits `[B, Nq, C]` (C + 1 with the CE loss) and masks `[B, Nq, H/4, W/4]` or None.
        """
        decoder_output = self.decoder_norm(output)
        outputs_class = self.class_embed(decoder_output)
        outputs_mask = None
        if pred_mask:
            mask_embed = self.mask_embed(decoder_output)
            outputs_mask = query_masks(mask_embed, mask_features)
        return outputs_class, outputs_mask

    def pred_box(self, references: list[Tensor], hs: list[Tensor], ref0: Tensor | None) -> Tensor:
        """Boxes of every prediction: `ref0` (if given) then each layer's refined box.

        Layer l's box is sigmoid(box_MLP(hs[l]) + logit(references[l])), where hs are the normed
        outputs (the references fed forward used the raw outputs).

        Returns:
            `[P, B, Nq, 4]` with P = len(hs) (+ 1 with ref0).
        """
        boxes = [] if ref0 is None else [ref0]
        for ref, box_head, layer_hs in zip(references[:-1], self.bbox_embed, hs):
            boxes.append((box_head(layer_hs) + inverse_sigmoid(ref)).sigmoid())
        return torch.stack(boxes)

    # ------------------------------------------------------------------ forward
    def _flatten_memory(self, x: list[Tensor]) -> tuple[Tensor, list[tuple[int, int]], Tensor]:
        """Flatten the levels in **reverse** encoder order (decoder level order)."""
        levels = [self.input_proj[idx](x[idx]) for idx in reversed(range(self.num_feature_levels))]
        return flatten_levels(levels)

    def _select_queries(
        self, memory: Tensor, spatial_shapes: list[tuple[int, int]], mask_features: Tensor
    ) -> tuple[Tensor, Tensor, dict]:
        """Two-stage selection of the top-Q encoder tokens.

        Returns:
            content queries `[B, Q, D]` (detached), anchor logits `[B, Q, 4]` (detached), and the
            intermediate ("interm") predictions of the selected tokens.
        """
        output_memory, proposals = encoder_output_proposals(memory, spatial_shapes)
        output_memory = self.enc_output_norm(self.enc_output(output_memory))
        enc_class = self.class_embed(output_memory)
        # Invalid (border) tokens are not excluded, as in the official code.
        topk = torch.topk(enc_class.max(-1)[0], self.num_queries, dim=1)[1]
        tgt_undetach = torch.gather(
            output_memory, 1, topk.unsqueeze(-1).expand(-1, -1, self.hidden_dim)
        )
        # The box MLP works token by token: run it on the selected tokens only (the official code
        # runs it on all S tokens and then keeps these Q rows).
        proposals = torch.gather(proposals, 1, topk.unsqueeze(-1).expand(-1, -1, 4))
        refpoint_undetach = self._bbox_embed(tgt_undetach) + proposals
        interm_class, interm_mask = self.forward_prediction_heads(tgt_undetach, mask_features)
        interm = {
            "pred_logits": interm_class,
            "pred_boxes": refpoint_undetach.sigmoid(),
            "pred_masks": interm_mask,
        }
        tgt = tgt_undetach.detach()
        if self.learn_tgt:
            tgt = self.query_feat.weight[None].expand(memory.shape[0], -1, -1)
        if self.initialize_box_type != "no":
            refpoint = masks_to_anchor_boxes(interm_mask, self.initialize_box_type)
        else:
            refpoint = refpoint_undetach.detach()
        return tgt, refpoint, interm

    def forward(
        self,
        x: list[Tensor],
        mask_features: Tensor,
        masks: Tensor | None = None,
        targets: list[dict] | None = None,
    ) -> tuple[dict, dict | None]:
        """Decode.

        Args:
            x: L multi-scale features `[B, D, H_l, W_l]` in encoder level order.
            mask_features: `[B, mask_dim, H/4, W/4]`.
            masks: unused (no padding masks, as in the official head).
            targets: training targets (list of dicts with `labels` [n] and `boxes` [n, 4]
                normalised cxcywh), needed for denoising queries.

        Returns:
            `(outputs, dn_meta)`. outputs holds the last prediction (`pred_logits` `[B, Q, C]`,
            `pred_masks` `[B, Q, H/4, W/4]`, `pred_boxes` `[B, Q, 4]`), `aux_outputs` (the
            earlier predictions; masks are None at inference) and, two-stage, `interm_outputs`.
            dn_meta is None unless denoising queries were added; then it holds `pad_size` (DN
            queries per image), `scalar` (groups), `single_pad` (slots per group), `indices`
            (the fixed DN assignment, matcher format) and `output_known_lbs_bboxes` (the DN
            predictions in the same format as outputs).
        """
        if len(x) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(x)}")
        batch = x[0].shape[0]
        memory, spatial_shapes, level_start_index = self._flatten_memory(x)

        interm = None
        if self.two_stage:
            tgt, refpoint, interm = self._select_queries(memory, spatial_shapes, mask_features)
        else:
            tgt = self.query_feat.weight[None].expand(batch, -1, -1)
            refpoint = self.query_embed.weight[None].expand(batch, -1, -1)

        dn, attn_mask = None, None
        if self.dn != "no" and self.training:
            if targets is None:
                raise ValueError("denoising training needs targets (labels and boxes per image)")
            dn = self.dn_generator(targets, self.num_queries, self.label_enc)
            if dn is not None:
                tgt = torch.cat([dn.content, tgt], dim=1)
                refpoint = torch.cat([dn.anchor_logits, refpoint], dim=1)
                attn_mask = dn.attn_mask

        predictions_class, predictions_mask = [], []
        if self.initial_pred:
            cls, msk = self.forward_prediction_heads(tgt, mask_features, self.training)
            predictions_class.append(cls)
            predictions_mask.append(msk)

        hs, references = self.decoder(
            tgt, memory, refpoint, spatial_shapes, level_start_index, attn_mask
        )
        for i, output in enumerate(hs):
            cls, msk = self.forward_prediction_heads(
                output, mask_features, self.training or i == len(hs) - 1
            )
            predictions_class.append(cls)
            predictions_mask.append(msk)

        out_boxes = self.pred_box(references, hs, refpoint.sigmoid() if self.initial_pred else None)
        out_boxes = list(out_boxes)
        dn_meta = None
        if dn is not None:
            pad = dn.pad_size
            dn_meta = {
                "pad_size": pad,
                "scalar": dn.num_groups,
                "single_pad": dn.max_objects,
                "indices": dn.indices,
                "output_known_lbs_bboxes": self._pack(
                    [c[:, :pad] for c in predictions_class],
                    [m[:, :pad] for m in predictions_mask],
                    [b[:, :pad] for b in out_boxes],
                ),
            }
            predictions_class = [c[:, pad:] for c in predictions_class]
            predictions_mask = [m[:, pad:] for m in predictions_mask]
            out_boxes = [b[:, pad:] for b in out_boxes]
        elif self.training:
            # Keeps label_enc in the graph when no DN queries were built (DDP).
            predictions_class[-1] = predictions_class[-1] + 0.0 * self.label_enc.weight.sum()

        out = self._pack(predictions_class, predictions_mask, out_boxes)
        if interm is not None:
            out["interm_outputs"] = interm
        return out, dn_meta

    @staticmethod
    def _pack(classes: list[Tensor], masks: list, boxes: list[Tensor]) -> dict:
        """The last prediction at the top level, the others as `aux_outputs`."""
        out = {"pred_logits": classes[-1], "pred_masks": masks[-1], "pred_boxes": boxes[-1]}
        out["aux_outputs"] = [
            {"pred_logits": c, "pred_masks": m, "pred_boxes": b}
            for c, m, b in zip(classes[:-1], masks[:-1], boxes[:-1])
        ]
        return out
