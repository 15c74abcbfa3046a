"""The detectors: plain, Early Fusion, Late Fusion and C3Det, on Faster R-CNN or RetinaNet.

    model = build_model(kind, num_classes, params)
    # kind: plain | passthrough | early_fusion | late_fusion | c3det

Train (model.train()):
    losses = model(images, clicks, targets)          # dict of scalar losses; sum them
Eval (model.eval()):
    detections = model(images, clicks)               # list of {"boxes", "labels", "scores"}

- images: list of (3, H, W) float tensors in [0, 1] (tinyloop.images.load_image; a (1, H, W)
  grayscale tensor is repeated to 3 channels). Sizes may differ; nothing is resized unless
  params.image_scale != 1 (a 640x512 HIT-UAV frame stays 640x512: tiny objects die when
  downscaled). The batch is zero-padded to multiples of 32.
- clicks: None, or per image a (K, 3) float tensor of rows (x, y, class index 0..C-1) in image
  pixels (K may be 0). The plain model ignores them.
- targets[i]: {"boxes": (N, 4) float xyxy px, "labels": (N,) int64 in 1..C, "clicked": (N,) bool
  (which objects were clicked; used by the C3Det UEL loss; optional)}.
- detections[i]: "boxes" (D, 4) xyxy in input-image px, "labels" (D,) int64 1..C, "scores" (D,).

Architecture (torchvision's detectors, with the CFINet porting notes for tiny objects): an
EfficientNet-Lite or ResNet FPN giving P2..P5 only (no max-pool level), one square anchor size
per level (params.anchor_sizes, 8/16/32/64 px, x aspect_ratios), RoIAlign with aligned=True.
Sized for 10-30 px objects on a CPU (params.fpn_channels: FPN, RPN head and click fusion 64
wide, not torchvision's 256; params.box_head_dim: the box head's fc width; docs/benchmarks/
detector_frontier.md measures each against accuracy per CPU-second). Kinds:
- plain          the detector alone.
- passthrough    the plain detector, then a relabel stage: every box a click falls in takes
                 the clicked class (the C3Det paper's simplest baseline; c3det.baselines).
- early_fusion   the class heatmaps concatenated to the normalised image: a 3 + C channel backbone.
- late_fusion    + LF branch (c3det.late_fusion) fused into every FPN level (c3det.fusion).
- c3det          + LF + C3 correlation maps (c3det.c3) + UEL loss on the RoI head (c3det.uel).

Multi-GPU: wrap in DistributedDataParallel(..., find_unused_parameters=True): a batch without
clicks skips the click branch (that is guarantee (1), see c3det.fusion), so its weights get no
gradient in that step.

The forward pass is split into stages so an interactive session can cache the image part:
`prepare` (normalise, pad, scale clicks) -> `image_features` (backbone + FPN; depends on clicks
only for early_fusion) -> `fuse` (click branch) -> `heads` (RPN + RoI head, or RetinaNet head;
at eval it ends with `relabel`, the passthrough kind's click stage, a no-op for the others).
Every kind is a ClickDetector with these stages: callers never need to know which kind runs.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import MultiScaleRoIAlign, clip_boxes_to_image, roi_align
from torchvision.ops.poolers import _setup_scales

from c3det.backbone import LEVELS, image_fpn
from c3det.click_to_box import relabel_by_clicks
from c3det.config import C3DetParams
from c3det.crpn import CascadeRPN
from c3det.feature_imitation import with_feature_imitation
from c3det.fusion import ClickFusion
from c3det.heatmaps import class_heatmaps
from c3det.uel import ClickRoIHeads

Kind = Literal["plain", "passthrough", "early_fusion", "late_fusion", "c3det"]
KINDS: tuple[str, ...] = ("plain", "early_fusion", "late_fusion", "c3det")  # architectures


class AlignedRoIAlign(MultiScaleRoIAlign):
    """torchvision's MultiScaleRoIAlign with aligned=True (the half-pixel shift matters for
    boxes a few pixels wide; MultiScaleRoIAlign does not expose the flag)."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor],
                image_shapes: list[tuple[int, int]]) -> Tensor:
        feats = [x[k] for k in self.featmap_names]
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(feats, image_shapes,
                                                         self.canonical_scale,
                                                         self.canonical_level)
        rois = torch.cat([torch.cat([b.new_full((len(b), 1), i), b], 1)
                          for i, b in enumerate(boxes)])
        levels = self.map_levels(boxes)
        out = feats[0].new_zeros((len(rois), feats[0].shape[1]) + self.output_size)
        for level, (feat, scale) in enumerate(zip(feats, self.scales)):
            idx = torch.where(levels == level)[0]
            out[idx] = roi_align(feat, rois[idx], self.output_size, scale, self.sampling_ratio,
                                 aligned=True).to(out.dtype)
        return out


class ScaledTransform(GeneralizedRCNNTransform):
    """Normalise with ImageNet statistics and batch (zero-pad to multiples of 32); resize only
    by a fixed factor (1.0 = never), unlike torchvision's min_size/max_size resizing."""

    def __init__(self, scale: float = 1.0):
        super().__init__(min_size=1, max_size=1, image_mean=[0.485, 0.456, 0.406],
                         image_std=[0.229, 0.224, 0.225], size_divisible=32)
        self.scale = scale

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None):
        if self.scale == 1.0:
            return image, target
        h, w = image.shape[-2:]
        image = F.interpolate(image[None], scale_factor=self.scale, mode="bilinear",
                              align_corners=False, recompute_scale_factor=True)[0]
        if target is not None:
            for key in ("boxes", "ignore"):
                if key in target:
                    target[key] = resize_boxes(target[key], (h, w), image.shape[-2:])
        return image, target


@dataclass
class Batch:
    """One prepared batch: what every stage after `prepare` needs."""
    images: ImageList                        # normalised, padded (B, 3, H, W) + true sizes
    clicks: list[Tensor]                     # (K, 3) per image, in network-input px
    targets: list[dict[str, Tensor]] | None  # boxes in network-input px
    original_sizes: list[tuple[int, int]]    # (H, W) of the input images
    input_clicks: list[Tensor] = field(default_factory=list)  # (K, 3) in input-image px

    @property
    def padded_size(self) -> tuple[int, int]:
        return tuple(self.images.tensors.shape[-2:])


class ClickDetector(nn.Module):
    """A torchvision detector (`self.detector`) plus an optional click branch (`self.fusion`)."""

    def __init__(self, kind: str, num_classes: int, detector: nn.Module,
                 fusion: ClickFusion | None, params: C3DetParams):
        super().__init__()
        self.kind, self.num_classes, self.params = kind, num_classes, params
        self.detector = detector
        self.fusion = fusion

    @property
    def uses_clicks(self) -> bool:
        return self.kind != "plain"

    @property
    def clicks_change_detections(self) -> bool:
        """False when the detections before `relabel` do not depend on the clicks (plain,
        passthrough): one forward pass serves every click set."""
        return self.kind not in ("plain", "passthrough")

    @property
    def caches_image_features(self) -> bool:
        """True when the backbone does not see the clicks (all kinds but early_fusion)."""
        return self.kind != "early_fusion"

    # --- stages ---
    def prepare(self, images: list[Tensor], clicks: list[Tensor] | None = None,
                targets: list[dict[str, Tensor]] | None = None) -> Batch:
        images = [im.expand(3, -1, -1) if im.shape[0] == 1 else im for im in images]
        for i, im in enumerate(images):
            if im.dim() != 3 or im.shape[0] != 3:
                raise ValueError(f"image {i}: expected a (3, H, W) tensor, got {tuple(im.shape)}")
        device = images[0].device
        if clicks is None:
            clicks = [torch.zeros(0, 3, device=device) for _ in images]
        if len(clicks) != len(images):
            raise ValueError(f"{len(images)} images but {len(clicks)} click tensors")
        original = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        image_list, targets = self.detector.transform(images, targets)
        return self.with_clicks(Batch(image_list, [], targets, original), clicks)

    def with_clicks(self, batch: Batch, clicks: list[Tensor]) -> Batch:
        """The same prepared images with other clicks (given in input-image px)."""
        device = batch.images.tensors.device
        given, scaled = [], []
        for c, (h, w), (nh, nw) in zip(clicks, batch.original_sizes, batch.images.image_sizes):
            c = torch.as_tensor(c, dtype=torch.float32, device=device).reshape(-1, 3)
            given.append(c)
            scaled.append(c * c.new_tensor([nw / w, nh / h, 1.0]))
        return Batch(batch.images, scaled, batch.targets, batch.original_sizes, given)

    def image_features(self, batch: Batch) -> "OrderedDict[str, Tensor]":
        x = batch.images.tensors
        if self.kind == "early_fusion":
            heat = torch.stack([class_heatmaps(c, self.num_classes, *batch.padded_size,
                                               self.params.heatmap_sigma) for c in batch.clicks])
            x = torch.cat([x, heat.to(x)], 1)
        return self.detector.backbone(x)

    def fuse(self, features: "OrderedDict[str, Tensor]", batch: Batch,
             external: list[dict | None] | None = None) -> "OrderedDict[str, Tensor]":
        """The click branch. `external[b]`: C3 templates of clicks outside image b (sliced
        inference, c3det.predict), {level: (T (K, D), classes (K,))}; see c3det.fusion."""
        if self.fusion is None:
            return features
        return self.fusion(features, batch.clicks, batch.padded_size, external)

    def heads(self, features: "OrderedDict[str, Tensor]", batch: Batch,
              candidates: bool = False):
        """Losses (training) or detections in input-image px, relabelled (eval). With
        `candidates`, each detection dict also holds "candidate_boxes" (M, C, 4) /
        "candidate_objectness" (M,): every proposal's (anchor's) per-class boxes and
        objectness before NMS (Faster R-CNN: 1 - P(background); RetinaNet: the highest class
        probability)."""
        if isinstance(self.detector, RetinaNet):
            out = self._retina_heads(features, batch, candidates)
        else:
            proposals, rpn_losses = self.detector.rpn(batch.images, features, batch.targets)
            out, roi_losses = self.detector.roi_heads(features, proposals,
                                                      batch.images.image_sizes, batch.targets,
                                                      candidates=candidates)
            if self.training:
                return {**rpn_losses, **roi_losses}
        if self.training:
            return out
        return [self.relabel(d, c)
                for d, c in zip(self._to_input_pixels(out, batch), batch.input_clicks)]

    def relabel(self, detection: dict[str, Tensor], clicks: Tensor) -> dict[str, Tensor]:
        """The click stage after detection: passthrough gives every box a click (x, y, class
        0..C-1, input-image px) falls in the clicked class; other kinds return `detection`."""
        if self.kind != "passthrough":
            return detection
        return relabel_by_clicks(detection, clicks)

    def forward(self, images: list[Tensor], clicks: list[Tensor] | None = None,
                targets: list[dict[str, Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("training mode needs targets (call model.eval() to predict)")
        batch = self.prepare(images, clicks, targets)
        return self.heads(self.fuse(self.image_features(batch), batch), batch)

    # --- helpers ---
    def _retina_heads(self, features, batch: Batch, candidates: bool):
        det: RetinaNet = self.detector
        feats = list(features.values())
        head = det.head(feats)
        anchors = det.anchor_generator(batch.images, feats)
        if self.training:
            return det.compute_loss(batch.targets, head, anchors)
        per_level = [f.shape[-2] * f.shape[-1] for f in feats]
        a = head["cls_logits"].shape[1] // sum(per_level)
        per_level = [n * a for n in per_level]
        split = {k: list(v.split(per_level, 1)) for k, v in head.items()}
        out = det.postprocess_detections(split, [list(x.split(per_level)) for x in anchors],
                                         batch.images.image_sizes)
        for i, d in enumerate(out):
            keep = d["labels"] > 0                  # column 0 (background) is never a class
            for k in ("boxes", "scores", "labels"):
                d[k] = d[k][keep]
            if candidates:
                scores = head["cls_logits"][i].sigmoid()[:, 1:]           # (A, C)
                top = scores.max(1).values.topk(min(det.topk_candidates, len(scores))).indices
                boxes = det.box_coder.decode_single(head["bbox_regression"][i][top],
                                                    anchors[i][top])
                boxes = clip_boxes_to_image(boxes, batch.images.image_sizes[i])
                d["candidate_boxes"] = boxes[:, None].expand(-1, self.num_classes, 4)
                d["candidate_objectness"] = scores[top].max(1).values
        return out

    def _to_input_pixels(self, detections: list[dict[str, Tensor]], batch: Batch):
        for d, size, orig in zip(detections, batch.images.image_sizes, batch.original_sizes):
            for k in ("boxes", "candidate_boxes"):
                if k in d and tuple(size) != tuple(orig):
                    shape = d[k].shape
                    d[k] = resize_boxes(d[k].reshape(-1, 4), size, orig).reshape(shape)
        return detections


def build_model(kind: str, num_classes: int, params: C3DetParams | None = None
                ) -> ClickDetector:
    """A fresh ClickDetector of `kind` (plain | passthrough | early_fusion | late_fusion |
    c3det) for `num_classes` object classes; passthrough's network is plain's."""
    p = params or C3DetParams()
    if kind not in KINDS + ("passthrough",):
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)} "
                         "or passthrough")
    if num_classes < 1:
        raise ValueError("num_classes must be >= 1")
    in_channels = 3 + num_classes if kind == "early_fusion" else 3
    backbone = image_fpn(p.backbone, in_channels=in_channels, out_channels=p.fpn_channels,
                         weights=p.weights, norm=p.norm,
                         freeze_through_stride=p.freeze_through_stride)
    ratios = (tuple(p.aspect_ratios),) * len(LEVELS)
    if p.detector == "faster_rcnn":
        anchors = AnchorGenerator(tuple((s,) for s in p.anchor_sizes), ratios)
        roi_pool = AlignedRoIAlign(list(LEVELS), 7, 2)
        det = FasterRCNN(backbone, rpn_anchor_generator=anchors, box_roi_pool=roi_pool,
                         box_head=TwoMLPHead(backbone.out_channels * 7 * 7, p.box_head_dim),
                         box_predictor=FastRCNNPredictor(p.box_head_dim, num_classes + 1),
                         box_score_thresh=p.score_thresh, box_nms_thresh=p.nms_iou,
                         box_detections_per_img=p.detections_per_img,
                         rpn_pre_nms_top_n_train=p.rpn_proposals_train,
                         rpn_post_nms_top_n_train=p.rpn_proposals_train,
                         rpn_pre_nms_top_n_test=max(1000, p.rpn_proposals_test),
                         rpn_post_nms_top_n_test=p.rpn_proposals_test,
                         box_batch_size_per_image=p.roi_batch_size)
        det.roi_heads = ClickRoIHeads.like(det.roi_heads,
                                           p.uel_weight if kind == "c3det" else 0.0)
        # CFINet's Feature Imitation head (c3det.feature_imitation); unchanged when p.fi is off
        det.roi_heads = with_feature_imitation(det.roi_heads, backbone.out_channels,
                                               num_classes, p.fi)
        if p.crpn.enabled:  # CFINet's Coarse-to-fine RPN (c3det.crpn) replaces torchvision's
            det.rpn = CascadeRPN(backbone.out_channels, p)
    elif p.detector == "retinanet":
        if p.crpn.enabled:
            raise ValueError("crpn.enabled needs detector faster_rcnn: the Coarse-to-fine RPN "
                             "replaces Faster R-CNN's RPN, RetinaNet has none")
        # three octave scales per level as in RetinaNet, starting at the CFINet size
        sizes = tuple(tuple(s * 2 ** (i / 3) for i in range(3)) for s in p.anchor_sizes)
        det = RetinaNet(backbone, num_classes + 1, anchor_generator=AnchorGenerator(sizes, ratios),
                        score_thresh=p.score_thresh, nms_thresh=p.nms_iou,
                        detections_per_img=p.detections_per_img)
    else:
        raise ValueError(f"unknown detector {p.detector!r}; use faster_rcnn or retinanet")
    det.transform = ScaledTransform(p.image_scale)
    fusion = None
    if kind in ("late_fusion", "c3det"):
        fusion = ClickFusion(num_classes, backbone.out_channels, use_lf=True,
                             use_c3=kind == "c3det", lf_channels=p.lf_channels,
                             heatmap_sigma=p.heatmap_sigma, c3_sigma=p.c3_sigma,
                             c3_normalize=p.c3_normalize, levels=len(LEVELS),
                             lf_backbone=p.lf_backbone)
    return ClickDetector(kind, num_classes, det, fusion, p)
