"""MaskDINO meta-architecture: pre-processing, targets, loss weighting, inference dispatch.

Input and output follow detectron2's model convention (see the `forward` docstring). The
official counterpart is IDEA-Research/MaskDINO `maskdino/maskdino.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detrex_ext.layers import box_xyxy_to_cxcywh
from detrex_ext.layers.activation_checkpointing import set_activation_checkpointing
from detrex_ext.modeling.postprocessing import sem_seg_postprocess
from detrex_ext.structures import BitMasks, ImageList, Instances, masks_to_tensor

from . import inference
from .checkpoint import adapt_checkpoint_state_dict, describe_layout_mismatch
from .metadata import DatasetMetadata

__all__ = ["MaskDINO"]

logger = logging.getLogger(__name__)

# Query masks resized per chunk in instance inference, so that each temporary (the padded-size
# resize, the output-size logits, probabilities and their product) is at most this large: glibc
# maps larger requests (above at most 32 MiB) fresh and returns them, or trims that much freed
# memory, so they are page-faulted in again on every use; smaller ones are reused from the heap.
_MASK_CHUNK_BYTES = 8 << 20


class MaskDINO(nn.Module):
    """Mask DINO: one model for detection, instance, panoptic and semantic segmentation.

    Args:
        backbone: a backbone returning a dict of feature maps (e.g. res2..res5).
        sem_seg_head: a `MaskDINOHead`.
        criterion: a `SetCriterion` (its `weight_dict` weights the losses).
        num_classes: C, the single source of the class count (the head, decoder and criterion
            configs interpolate it); checked against the dataset metadata when available.
            None (detrex's configs) takes it from `sem_seg_head.num_classes`.
        num_queries: Q, matching queries of the decoder.
        object_mask_threshold: panoptic: minimum sigmoid class score of a kept query.
        overlap_threshold: panoptic: minimum won-area / own-area ratio of a segment.
        metadata: dataset name (resolved through `MetadataCatalog`) whose thing classes the
            panoptic path needs; None when not needed. A metadata object (detrex's configs pass
            `MetadataCatalog.get(name)`) is used as is; its class count is not checked (detrex
            passes COCO's instance metadata to every task).
        size_divisibility: pad the batch to a multiple of this (32); < 0 uses the backbone's.
        sem_seg_postprocess_before_inference: resize masks to the output size before semantic
            inference (forced on when instance_on or panoptic_on, as in the official code).
        pixel_mean, pixel_std: RGB normalisation, 0-255 scale.
        semantic_on, instance_on, panoptic_on: which outputs inference produces.
        test_topk_per_image: instance predictions per image (100).
        pano_temp: temperature of the sharpened class scores (semantic / panoptic).
        focus_on_box: instance score = class score (no mask score).
        transform_eval: sharpen sigmoid class scores with softmax(sigmoid / pano_temp).
        semantic_ce_loss: the model was trained with the softmax CE class loss (C + 1 logits).
        activation_checkpointing: turn on activation checkpointing in every submodule that
            supports it (backbone stages or blocks, encoder and decoder layers): training keeps
            fewer activations and recomputes them in the backward, with the same losses and
            gradients. False leaves the submodules' own settings as configured.
        params: detrex's parameter bag (the values its config interpolates); unused.
        channels_last: run the convolutions of the backbone and the pixel decoder in the
            channels-last (NHWC) memory layout: their weights are converted here and the image
            batch in `forward`. Faster on CPU (oneDNN); NHWC is also cuDNN's preferred layout
            under autocast (GPU speed not measured here). The results equal the NCHW ones up to
            rounding.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        sem_seg_head: nn.Module,
        criterion: nn.Module,
        num_classes: int | None = None,
        num_queries: int = 300,
        object_mask_threshold: float = 0.25,
        overlap_threshold: float = 0.8,
        metadata: str | Sequence[str] | None = None,
        size_divisibility: int = 32,
        sem_seg_postprocess_before_inference: bool = True,
        pixel_mean: Sequence[float] = (123.675, 116.280, 103.530),
        pixel_std: Sequence[float] = (58.395, 57.120, 57.375),
        semantic_on: bool = False,
        instance_on: bool = True,
        panoptic_on: bool = False,
        test_topk_per_image: int = 100,
        pano_temp: float = 0.06,
        focus_on_box: bool = False,
        transform_eval: bool = True,
        semantic_ce_loss: bool = False,
        activation_checkpointing: bool = False,
        params: Mapping | None = None,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if num_classes is None:
            num_classes = sem_seg_head.num_classes
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.object_mask_threshold = object_mask_threshold
        self.overlap_threshold = overlap_threshold
        self.metadata = DatasetMetadata(metadata)
        if size_divisibility < 0:
            size_divisibility = getattr(backbone, "size_divisibility", 0)
        self.size_divisibility = size_divisibility
        self.sem_seg_postprocess_before_inference = (
            sem_seg_postprocess_before_inference or instance_on or panoptic_on
        )
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.semantic_on = semantic_on
        self.instance_on = instance_on
        self.panoptic_on = panoptic_on
        self.test_topk_per_image = test_topk_per_image
        self.pano_temp = pano_temp
        self.focus_on_box = focus_on_box
        self.transform_eval = transform_eval
        self.semantic_ce_loss = semantic_ce_loss
        self._check_num_classes()
        if isinstance(self.metadata.source, str):
            self.metadata.check_num_classes(num_classes)
        self.activation_checkpointing = activation_checkpointing
        if activation_checkpointing:
            switched = set_activation_checkpointing(self, True)
            if not switched:
                raise ValueError(
                    "model.activation_checkpointing=True but no submodule supports it (none has "
                    "set_activation_checkpointing()); set it to False"
                )
            logger.info("activation checkpointing on in: %s", ", ".join(switched))
        self.channels_last = channels_last
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
            pixel_decoder = getattr(sem_seg_head, "pixel_decoder", None)
            if pixel_decoder is not None:
                pixel_decoder.to(memory_format=torch.channels_last)
        self.register_load_state_dict_pre_hook(_drop_non_persistent)

    def _check_num_classes(self) -> None:
        for where, module in (
            ("sem_seg_head", self.sem_seg_head),
            ("sem_seg_head.predictor", getattr(self.sem_seg_head, "predictor", None)),
            ("criterion", self.criterion),
        ):
            value = getattr(module, "num_classes", self.num_classes)
            if value != self.num_classes:
                raise ValueError(
                    f"model.num_classes={self.num_classes} but model.{where} was built with "
                    f"num_classes={value}. Set only `model.num_classes`; the other keys "
                    'interpolate it (e.g. num_classes="${..num_classes}").'
                )

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------ checkpoints
    def adapt_checkpoint_state_dict(self, state_dict: dict) -> dict:
        """Map an official (or detrex) Mask DINO state_dict onto this model's keys.

        Accepts a bare state_dict or `{"model": state_dict}`; fills every alias of the shared box
        MLP and of `decoder_norm`. See `detrex_projects.maskdino.modeling.checkpoint`.
        """
        own = self.state_dict()
        adapted = adapt_checkpoint_state_dict(state_dict, own)
        for message in describe_layout_mismatch(adapted, own):
            logger.warning(message)
        return adapted

    # ------------------------------------------------------------------ export
    def export_adapter(self, *, postprocess: bool = True, mask_format: str = "logits") -> nn.Module:
        """This model as a function of a uint8 image batch, for `detrex_ext.export` (ONNX and
        `torch.export`): see `detrex_projects.maskdino.modeling.export.MaskDINOExportAdapter`."""
        from .export import MaskDINOExportAdapter

        return MaskDINOExportAdapter(self, postprocess=postprocess, mask_format=mask_format)

    # ------------------------------------------------------------------ forward
    def forward(self, batched_inputs: list[dict]):
        """Run the model on a detectron2-style batch.

        Args:
            batched_inputs: one dict per image with `image` (uint8 `[3, H, W]`, RGB), optional
                `height` / `width` (output size, default: the input size) and, in training,
                `instances` (`gt_classes` int64 `[N]`, `gt_boxes` Boxes xyxy, `gt_masks` bool
                `[N, H, W]`, or any mask container: BitMasks-like with `.tensor`,
                PolygonMasks-like with `.polygons`, rasterised) or `sem_seg` (long `[H, W]`,
                255 = ignore).

        Returns:
            training: dict of weighted scalar losses (unweighted keys are dropped).
            inference: one dict per image with `instances` (`pred_boxes`, `scores`,
            `pred_classes`, `pred_masks` `[K, height, width]`), `sem_seg` (`[C, height, width]`)
            and `panoptic_seg` (`(int32 [height, width], segments_info)`), as switched on.
        """
        images = [x["image"].to(self.device) for x in batched_inputs]
        images = [(x - self.pixel_mean) / self.pixel_std for x in images]
        images = ImageList.from_tensors(images, self.size_divisibility)
        batch = images.tensor
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        features = self.backbone(batch)

        if self.training:
            targets = self.prepare_targets(batched_inputs, images)
            outputs, dn_meta = self.sem_seg_head(features, targets=targets)
            losses = self.criterion(outputs, targets, dn_meta)
            weight_dict = self.criterion.weight_dict
            return {k: v * weight_dict[k] for k, v in losses.items() if k in weight_dict}

        outputs, _ = self.sem_seg_head(features)
        # Post-processing runs in float32 even under autocast (the official evaluation is fp32).
        with torch.autocast(device_type=self.device.type, enabled=False):
            return self.inference(outputs, batched_inputs, images)

    # ------------------------------------------------------------------ targets
    def prepare_targets(self, batched_inputs: list[dict], images: ImageList) -> list[dict]:
        """Per image: `labels` `[n]`, `masks` bool `[n, H_pad, W_pad]` (zero-padded) and `boxes`
        `[n, 4]` cxcywh normalised by the Instances' image size."""
        h_pad, w_pad = images.tensor.shape[-2:]
        targets = []
        for x in batched_inputs:
            if "instances" in x:
                inst = x["instances"]
            elif "sem_seg" in x:
                inst = instances_from_sem_seg(x["sem_seg"], self.sem_seg_head.ignore_value)
            else:
                raise ValueError(
                    "training inputs need `instances` (gt_classes, gt_boxes, gt_masks) or "
                    "`sem_seg` in every dict"
                )
            self._check_labels(inst.gt_classes)
            h, w = inst.image_size
            # any mask container: ours or detectron2's BitMasks / PolygonMasks, or a tensor
            gt_masks = masks_to_tensor(inst.gt_masks, h, w).to(self.device)
            inst = inst.to(self.device)
            padded = gt_masks.new_zeros((gt_masks.shape[0], h_pad, w_pad))
            padded[:, : gt_masks.shape[1], : gt_masks.shape[2]] = gt_masks
            cx, cy, bw, bh = box_xyxy_to_cxcywh(inst.gt_boxes.tensor).unbind(-1)
            boxes = torch.stack([cx / w, cy / h, bw / w, bh / h], -1)
            targets.append({"labels": inst.gt_classes, "masks": padded, "boxes": boxes})
        return targets

    def _check_labels(self, gt_classes: Tensor) -> None:
        # Only checked while labels are still on the CPU (no device sync).
        if gt_classes.device.type == "cpu" and gt_classes.numel() > 0:
            top = int(gt_classes.max())
            if top >= self.num_classes or int(gt_classes.min()) < 0:
                raise ValueError(
                    f"a ground-truth class id {top} is outside [0, {self.num_classes}) "
                    f"(model.num_classes={self.num_classes}); the dataset has more classes than "
                    "the model: set `model.num_classes` to the dataset's class count"
                )

    # ------------------------------------------------------------------ inference
    def _masks_at_output_size(
        self, masks: Tensor, padded_size, image_size, height: int, width: int
    ) -> Tensor:
        """Upsample `[K, h/4, w/4]` mask logits to the padded input, then crop and resize to
        (height, width), as the official code does (padded resize, then `sem_seg_postprocess`)."""
        masks = F.interpolate(masks[None], size=padded_size, mode="bilinear", align_corners=False)[
            0
        ]
        return sem_seg_postprocess(masks, image_size, height, width)

    def inference(self, outputs: dict, batched_inputs: list[dict], images: ImageList) -> list[dict]:
        """Post-process the final predictions of every image (spec section 6).

        Only the switched-on outputs are computed. All queries' masks are resized only for the
        semantic map (it sums over every query); panoptic and instance results resize just the
        queries they keep (or index the semantic path's masks), which gives the same values.
        """
        padded_size = tuple(images.tensor.shape[-2:])
        results = []
        for b, (x, image_size) in enumerate(zip(batched_inputs, images.image_sizes)):
            height = x.get("height", image_size[0])
            width = x.get("width", image_size[1])
            mask_cls = outputs["pred_logits"][b].float()
            mask_pred = outputs["pred_masks"][b].float()
            result: dict = {}

            # Every query's mask at the output size: the semantic map sums over all queries;
            # panoptic / instance results index it, or resize only their queries when that is
            # exact (`_query_masks`). Computed at most once per image.
            full_masks = None
            subset_exact = inference.subset_resize_is_exact(padded_size, (height, width))
            if (self.semantic_on and self.sem_seg_postprocess_before_inference) or (
                (self.panoptic_on or self.instance_on) and not subset_exact
            ):
                full_masks = self._masks_at_output_size(
                    mask_pred, padded_size, image_size, height, width
                )
            if self.semantic_on:
                sem_masks = full_masks
                if not self.sem_seg_postprocess_before_inference:  # the map is resized instead
                    sem_masks = F.interpolate(
                        mask_pred[None], size=padded_size, mode="bilinear", align_corners=False
                    )[0]
                sem = inference.semantic_inference(
                    mask_cls, sem_masks, self.semantic_ce_loss, self.transform_eval, self.pano_temp
                )
                if not self.sem_seg_postprocess_before_inference:
                    sem = sem_seg_postprocess(sem, image_size, height, width)
                result["sem_seg"] = sem
            if self.panoptic_on:
                result["panoptic_seg"] = self._panoptic_result(
                    mask_cls, mask_pred, full_masks, padded_size, image_size, height, width
                )
            if self.instance_on:
                result["instances"] = self._instance_result(
                    mask_cls,
                    mask_pred,
                    outputs["pred_boxes"][b].float(),
                    full_masks,
                    padded_size,
                    image_size,
                    height,
                    width,
                )
            results.append(result)
        return results

    def _query_masks(
        self, mask_pred, queries, full_masks, padded_size, image_size, height, width
    ) -> Tensor:
        """`[K, height, width]` mask logits of `queries` (`[K]` int64 indices into the `[Q, h, w]`
        `mask_pred`), equal to the all-query resize at those indices: taken from `full_masks`
        when `inference` made it (semantic output on, or maps small enough that a subset could
        round differently), else only these queries are resized."""
        if full_masks is not None:
            return full_masks[queries]
        return inference.resize_mask_logits(
            mask_pred[queries], padded_size, image_size, (height, width)
        )

    def _panoptic_result(
        self, mask_cls, mask_pred, full_masks, padded_size, image_size, height, width
    ) -> tuple[Tensor, list[dict]]:
        """Panoptic map and segments of one image; only the kept queries' masks are resized."""
        queries, scores, labels = inference.panoptic_keep(
            mask_cls, self.object_mask_threshold, self.transform_eval, self.pano_temp
        )
        masks = self._query_masks(
            mask_pred, queries, full_masks, padded_size, image_size, height, width
        )
        return inference.panoptic_merge(
            scores, labels, masks, self.metadata.thing_ids(), self.overlap_threshold
        )

    def _instance_result(
        self, mask_cls, mask_pred, boxes, full_masks, padded_size, image_size, height, width
    ) -> Instances:
        """Top-k instances; only the selected queries' masks are resized (same values)."""
        thing_ids = self.metadata.thing_ids() if self.panoptic_on else None
        scores, labels, queries = inference.select_topk_queries(
            mask_cls, self.num_classes, self.test_topk_per_image, thing_ids
        )
        # Resized a few queries at a time: every temporary stays heap-sized (see _MASK_CHUNK_BYTES).
        pixels = max(padded_size[0] * padded_size[1], int(height) * int(width), 1)
        per_chunk = max(1, _MASK_CHUNK_BYTES // (4 * pixels))
        masks = (
            self._query_masks(mask_pred, chunk, full_masks, padded_size, image_size, height, width)
            for chunk in queries.split(per_chunk)
        )
        # Boxes are normalised over the padded canvas: scale by the padded size at output scale.
        scale_h = padded_size[0] / image_size[0] * height
        scale_w = padded_size[1] / image_size[1] * width
        boxes = inference.scale_boxes(boxes[queries], scale_h, scale_w)
        return inference.instance_inference(
            scores, labels, masks, boxes, (int(height), int(width)), self.focus_on_box
        )


def instances_from_sem_seg(sem_seg: Tensor, ignore_value: int = 255) -> Instances:
    """One instance per class present in a semantic label map (the official semantic mapper's
    targets): `gt_classes` `[n]`, `gt_masks` bool `[n, H, W]`, `gt_boxes` from the masks."""
    from detrex_ext.structures import Boxes

    classes = torch.unique(sem_seg)
    classes = classes[classes != ignore_value].long()
    masks = sem_seg[None] == classes[:, None, None]
    inst = Instances(tuple(sem_seg.shape[-2:]))
    inst.gt_classes = classes
    inst.gt_masks = masks
    inst.gt_boxes = Boxes(BitMasks(masks).get_bounding_boxes().tensor)
    return inst


def _drop_non_persistent(module, state_dict, prefix, *_args) -> None:
    """Old detectron2 checkpoints may carry `pixel_mean` / `pixel_std`; they are config here."""
    for name in ("pixel_mean", "pixel_std"):
        state_dict.pop(prefix + name, None)
