"""What `detrex_ext.export` exports of a Mask DINO model: uint8 images in, named tensors out.

`MaskDINO.export_adapter()` returns a `MaskDINOExportAdapter`: an `nn.Module` whose forward is the
whole inference of a fixed-size batch (normalisation, backbone, encoder, query selection, decoder
without the denoising branch, and by default the post-processing of every output the model
switches on), written with fixed shapes so that it exports to ONNX and `torch.export`. Names of
the outputs follow the schema of `detrex_ext.export` (read by its ONNX runtime):

* raw: `pred_logits [B, Q, C]`, `pred_boxes [B, Q, 4]` (normalised cxcywh), `pred_masks
  [B, Q, H/4, W/4]` (logits);
* post-processed, per switched-on output: `instance_scores [B, K]`, `instance_classes [B, K]`,
  `instance_boxes [B, K, 4]` (xyxy, input pixels), `instance_masks [B, K, H, W]` (logits by
  default: resized further they threshold exactly as the eager model's; probabilities with
  `mask_format="prob"`, bool with `"binary"`), `instance_valid [B, K]`; `sem_seg [B, H, W]` (class ids);
  `panoptic_seg [B, H, W]` (segment ids) with `panoptic_segments [B, Q, 4]` (rows `(is_new_segment,
  id, category_id, isthing)`); then the small raw `pred_logits` and `pred_boxes`.

Integer outputs are int32 (TensorRT casts int64 anyway). The adapter also computes the eager
reference the exported graph must match (`reference_predictions`, the model's own inference) and
the decisions of an input that sit within a tolerance of a tie (`decision_ties`), which
`detrex_ext.export.verify` needs to tell a numeric error from a legitimately flipped decision.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from . import export_postprocess as post
from .query_selection import encoder_output_proposals, masks_to_anchor_boxes

__all__ = ["MASK_FORMATS", "MaskDINOExportAdapter"]

MASK_FORMATS = ("logits", "prob", "binary")
RAW_OUTPUTS = ("pred_logits", "pred_boxes", "pred_masks")
INSTANCE_OUTPUTS = (
    "instance_scores",
    "instance_classes",
    "instance_boxes",
    "instance_masks",
    "instance_valid",
)


class MaskDINOExportAdapter(nn.Module):
    """A Mask DINO model as an exportable function of a uint8 image batch.

    Args:
        model: a `MaskDINO` (put in eval mode; its weights are shared, not copied).
        postprocess: return the final predictions of every switched-on output (instance,
            semantic, panoptic) computed in the graph, plus the small raw logits and boxes;
            False returns the raw `pred_logits`, `pred_boxes`, `pred_masks`.
        mask_format: instance masks as logits (`"logits"`, float32: mask = logit > 0, the eager
            model's threshold, also after resizing them to another size), probabilities
            (`"prob"`) or thresholded (`"binary"`, bool: 4x smaller).
    """

    input_names = ("images",)

    def __init__(self, model: nn.Module, *, postprocess: bool = True, mask_format: str = "logits"):
        super().__init__()
        if mask_format not in MASK_FORMATS:
            raise ValueError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}")
        if not (model.instance_on or model.semantic_on or model.panoptic_on) and postprocess:
            raise ValueError(
                "the model switches every output off (instance_on, semantic_on and panoptic_on "
                "are False): switch one on, or export the raw outputs (postprocess=False)"
            )
        self.model = model.eval()
        self.postprocess = postprocess
        self.mask_format = mask_format
        self._thing_ids = model.metadata.thing_ids() if model.panoptic_on else None

    # ------------------------------------------------------------------ description
    @property
    def output_names(self) -> tuple[str, ...]:
        if not self.postprocess:
            return RAW_OUTPUTS
        names: list[str] = []
        if self.model.instance_on:
            names += INSTANCE_OUTPUTS
        if self.model.semantic_on:
            names.append("sem_seg")
        if self.model.panoptic_on:
            names += ["panoptic_seg", "panoptic_segments"]
        return (*names, "pred_logits", "pred_boxes")

    def check_input_size(self, height: int, width: int) -> None:
        """Raise unless `(height, width)` is a multiple of the model's size divisibility (the
        padding the eager model applies; an exported graph does not pad)."""
        stride = max(int(self.model.size_divisibility), 1)
        if height % stride or width % stride or height <= 0 or width <= 0:
            fit = (-(-max(height, 1) // stride) * stride, -(-max(width, 1) // stride) * stride)
            raise ValueError(
                f"input size {height}x{width} is not a multiple of the backbone stride {stride} "
                f"(model.size_divisibility): use {fit[0]}x{fit[1]}"
            )

    def export_metadata(self) -> dict:
        """What a runtime needs to prepare inputs and read the outputs (JSON-serialisable)."""
        model = self.model
        return {
            "architecture": type(model).__name__,
            "num_classes": int(model.num_classes),
            "num_queries": int(model.num_queries),
            "pixel_mean": [round(float(v), 6) for v in model.pixel_mean.flatten()],
            "pixel_std": [round(float(v), 6) for v in model.pixel_std.flatten()],
            "size_divisibility": int(model.size_divisibility),
            "postprocess": self.postprocess,
            "mask_format": self.mask_format,
            "tasks": {
                "instance": bool(model.instance_on),
                "semantic": bool(model.semantic_on),
                "panoptic": bool(model.panoptic_on),
            },
            "thresholds": {
                "test_topk_per_image": int(model.test_topk_per_image),
                "object_mask_threshold": float(model.object_mask_threshold),
                "overlap_threshold": float(model.overlap_threshold),
                "mask_threshold": 0.5,
            },
            "thing_ids": self._thing_ids,
        }

    # ------------------------------------------------------------------ graph
    def _raw(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        model = self.model
        x = (images.float() - model.pixel_mean) / model.pixel_std
        outputs, _ = model.sem_seg_head(model.backbone(x))
        return outputs["pred_logits"], outputs["pred_boxes"], outputs["pred_masks"]

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """images: uint8 `[B, 3, H, W]` RGB -> the tensors named by `output_names`."""
        logits, boxes, masks = self._raw(images)
        if not self.postprocess:
            return logits, boxes, masks
        model = self.model
        size = tuple(images.shape[-2:])
        full_masks = None
        if model.semantic_on or model.panoptic_on:
            full_masks = post.resize_masks(masks, size)
        results: list[Tensor] = []
        if model.instance_on:
            inst = post.instance_predictions(
                logits,
                masks,
                boxes,
                num_classes=model.num_classes,
                topk=model.test_topk_per_image,
                image_size=size,
                thing_ids=self._thing_ids,
                focus_on_box=model.focus_on_box,
                full_size_masks=full_masks,
            )
            mask_logits = inst["mask_logits"]
            masks_out = {
                "logits": mask_logits,
                "prob": mask_logits.sigmoid(),
                "binary": mask_logits > 0,
            }[self.mask_format]
            results += [
                inst["scores"],
                inst["classes"].to(torch.int32),
                inst["boxes"],
                masks_out,
                inst["valid"],
            ]
        if model.semantic_on:
            sem = post.semantic_predictions(
                logits,
                full_masks,
                semantic_ce_loss=model.semantic_ce_loss,
                transform_eval=model.transform_eval,
                temperature=model.pano_temp,
            )
            results.append(sem.to(torch.int32))
        if model.panoptic_on:
            panoptic_seg, segments = post.panoptic_predictions(
                logits,
                full_masks,
                thing_ids=self._thing_ids,
                object_mask_threshold=model.object_mask_threshold,
                overlap_threshold=model.overlap_threshold,
                transform_eval=model.transform_eval,
                temperature=model.pano_temp,
            )
            results += [panoptic_seg.to(torch.int32), segments.to(torch.int32)]
        return (*results, logits, boxes)

    # ------------------------------------------------------------------ verification
    @torch.no_grad()
    def reference_predictions(self, images: Tensor) -> list[dict[str, np.ndarray]]:
        """The eager model's own inference (`MaskDINO.forward`) of `images` (uint8 `[B, 3, H, W]`),
        per image, in the exported output schema (outputs at the input size)."""
        model = self.model
        outputs = model([{"image": image} for image in images])
        results = []
        for output in outputs:
            result: dict[str, np.ndarray] = {}
            if "instances" in output:
                inst = output["instances"].to("cpu")
                result["instance_scores"] = inst.scores.numpy()
                result["instance_classes"] = inst.pred_classes.numpy().astype(np.int32)
                result["instance_boxes"] = inst.pred_boxes.tensor.numpy()
                result["instance_masks"] = inst.pred_masks.numpy() > 0.5
                result["instance_valid"] = np.ones(len(inst), dtype=bool)
            if "sem_seg" in output:
                result["sem_seg"] = output["sem_seg"].argmax(0).cpu().numpy().astype(np.int32)
            if "panoptic_seg" in output:
                panoptic_seg, segments_info = output["panoptic_seg"]
                result["panoptic_seg"] = panoptic_seg.cpu().numpy().astype(np.int32)
                rows = [(1, s["id"], s["category_id"], int(s["isthing"])) for s in segments_info]
                result["panoptic_segments"] = np.asarray(rows, dtype=np.int32).reshape(-1, 4)
            results.append(result)
        return results

    @torch.no_grad()
    def decision_ties(self, images: Tensor, delta: float) -> list[dict[str, str]]:
        """Discrete decisions of the eager model on `images` that a numeric change of `delta`
        could flip, per image: `{check: reason}` with checks

        * `"raw"`: two-stage query selection (the Q-th and (Q+1)-th encoder token scores) or a
          mask-enhanced anchor box (a mask logit within `delta` of 0 sets a box edge): every
          output of the image may then legitimately differ;
        * `"instances"`: the instance top-k boundary (class scores of pairs K and K+1);
        * `"panoptic"`: a query's best class score within `delta` of `object_mask_threshold`.
        """
        model = self.model
        decoder = model.sem_seg_head.predictor
        x = (images.float() - model.pixel_mean) / model.pixel_std
        mask_features, _, levels = model.sem_seg_head.pixel_decoder.forward_features(
            model.backbone(x)
        )
        ties: list[dict[str, str]] = [{} for _ in range(images.shape[0])]
        if decoder.two_stage:
            self._selection_ties(decoder, levels, mask_features, delta, ties)
        outputs, _ = decoder(levels, mask_features)
        logits = outputs["pred_logits"].float()
        if model.instance_on:
            scores = logits[..., : model.num_classes].sigmoid().flatten(1)
            k = min(model.test_topk_per_image, scores.shape[1])
            if k < scores.shape[1]:
                top = scores.topk(k + 1, dim=1).values
                for b, gap in enumerate((top[:, k - 1] - top[:, k]).tolist()):
                    if gap < delta:
                        ties[b]["instances"] = (
                            f"top-k boundary: pairs {k} and {k + 1} {gap:.1e} apart"
                        )
        if model.panoptic_on:
            best = logits.sigmoid().max(-1).values
            distance = (best - model.object_mask_threshold).abs().min(1).values
            for b, d in enumerate(distance.tolist()):
                if d < delta:
                    ties[b]["panoptic"] = f"a query's class score {d:.1e} from the keep threshold"
        return ties

    def _selection_ties(self, decoder, levels, mask_features, delta, ties) -> None:
        memory, spatial_shapes, _ = decoder._flatten_memory(levels)
        output_memory, _ = encoder_output_proposals(memory, spatial_shapes)
        enc_class = decoder.class_embed(decoder.enc_output_norm(decoder.enc_output(output_memory)))
        token_scores = enc_class.max(-1).values
        q = decoder.num_queries
        if token_scores.shape[1] > q:
            top = token_scores.topk(q + 1, dim=1).values
            for b, gap in enumerate((top[:, q - 1] - top[:, q]).tolist()):
                if gap < delta:
                    ties[b]["raw"] = f"query selection: tokens {q} and {q + 1} {gap:.1e} apart"
        if decoder.initialize_box_type == "no":
            return
        _, _, interm = decoder._select_queries(memory, spatial_shapes, mask_features)
        masks = interm["pred_masks"]
        low = masks_to_anchor_boxes(masks - delta, decoder.initialize_box_type)
        high = masks_to_anchor_boxes(masks + delta, decoder.initialize_box_type)
        for b in range(masks.shape[0]):
            if not torch.equal(low[b], high[b]):
                ties[b].setdefault(
                    "raw", "mask-enhanced anchors: a mask logit near 0 sets a box edge"
                )
