"""Coarse-to-fine RPN (CRPN) of CFINet: proposals for tiny objects (Yuan et al., "Small Object
Detection via Coarse-to-fine Proposal Generation and Imitation Learning", ICCV 2023, sec. 3.2).

    rpn = CascadeRPN(256, params)            # params: C3DetParams; knobs in params.crpn
    proposals, losses = rpn(images, features, targets)

Same call as torchvision's RegionProposalNetwork, so `detector.rpn = CascadeRPN(...)` drops into
a FasterRCNN: images is an ImageList (padded (B, 3, H, W) + true sizes), features the FPN
levels P2..P5 (B, C, H/s, W/s) for s = 4, 8, 16, 32, targets[i]["boxes"] (G, 4) xyxy px (train
only); returns proposals, per image (N_i, 4) xyxy px (detached), and the losses (train only):
loss_crpn_stage1, loss_crpn_objectness, loss_crpn_box.

Per FPN level (all convs shared across levels), one square anchor of params.anchor_sizes[l]
(8/16/32/64 px) centred on every feature cell, no P6:
1. Stage 1, coarse (regression only): ReLU(3x3 conv, dilation 3) -> 1x1 conv -> box deltas
   w.r.t. the anchor. Anchors are assigned with the area-based rule (eq. 1, `assign_stage1`).
2. Stage 2, fine: an adaptive convolution (Cascade RPN's; DeformConv2d 3x3) on the stage-1
   features whose 9 sampling points are spread over the cell's stage-1 box
   (`adaptive_offsets`) -> objectness + box deltas w.r.t. the stage-1 box, assigned by MaxIoU
   (positive >= 0.7, negative < 0.3, each object's best boxes positive).
Loss (eq. 2): alpha_1 (L_reg^c + L_reg^f) + alpha_2 L_cls, alpha_1 = 9.0, alpha_2 = 0.9.
Proposals: top-k stage-2 boxes per level, clipped, tiny ones dropped, NMS per level, the best
params.rpn_proposals_train / rpn_proposals_test (300) kept.

Choices where the paper is silent, from its reference code (mmdetection CRPNHead) unless said:
- eq. 1 in the paper reads max(0.25, 0.20 + ...); the brief and the reference code use
  T = min(0.70, max(0.20, 0.25 + 0.15 log2(sqrt(wh) / 12))), used here (`adaptive_threshold`).
- stage 1: an anchor is positive for its highest-IoU object among those whose T it reaches;
  unlike the reference (which has no such step, and whose initial threshold makes every
  anchor with IoU >= 0.25 positive), every object also gets its best anchors (IoU > 0), as
  torchvision's Matcher(allow_low_quality_matches=True) does: a 3 px object reaches at best
  IoU 9/64 with an 8 px anchor, below even the negative threshold.
- box coders: stage 1 weights (10, 10, 2, 2), stage 2 (20, 20, 10, 10) (the reference's
  target_stds inverted); IoU losses on the decoded boxes; stage 2 samples 256 anchors per
  image, at most half positive, losses averaged over them (as torchvision's RPN and the
  reference). The box-regression layers start at zero: each stage's boxes start as its
  anchors (stage 1) or the stage-1 boxes (stage 2), not 2-6x taller (with std-0.01 weights
  the ImageNet FPN's features, mean |x| ~ 9 on P2, give raw deltas of mean |dh| ~ 3.6).
- stage-1 loss: summed over positives and divided by B x stage2_samples, the stage-2 IoU
  loss's normaliser, so eq. 2's shared alpha_1 weighs a positive of either stage alike at
  any input size. Not the reference's (anchors in the batch / 200, after Guided Anchoring):
  that grows with the image area, ~600 per image at the reference's 1200 px inputs (the same
  order as 256) but 15 on 192 px training crops, where each positive then weighed 17x more
  and the stage-1 layers diverged (issue #14: the boxes grew to the decoder's size clamp,
  where the IoU loss has no gradient, and the loss rose; see `benchmarks/crpn_recall.py`).
- IoU loss: torchvision's generalized_box_iou_loss (the reference: linear IoU loss). Equal
  up to the enclosing-box term while boxes overlap, and it still has a gradient when they don't.
- stage 2 reads the stage-1 features (the reference's refined_feature=True) and the stage-1
  boxes clipped to the image and detached (no gradient through the offsets).
- NMS 0.7 per level at train and test (torchvision's RPN; the reference: 0.8 train, 0.5 test).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import (DeformConv2d, batched_nms, box_iou, clip_boxes_to_image,
                             generalized_box_iou_loss, remove_small_boxes)

from c3det.config import C3DetParams, CRPNParams

T_MIN, T_BASE, T_MAX = 0.20, 0.25, 0.70   # eq. 1 as in the reference code
STAGE1_WEIGHTS = (10.0, 10.0, 2.0, 2.0)   # 1 / target_stds (0.1, 0.1, 0.5, 0.5)
STAGE2_WEIGHTS = (20.0, 20.0, 10.0, 10.0)  # 1 / target_stds (0.05, 0.05, 0.1, 0.1)
MIN_SIZE = 1e-3                           # px, smaller proposals are dropped (torchvision)


def adaptive_threshold(w: Tensor, h: Tensor, base_size: float = 12.0,
                       gamma: float = 0.15) -> Tensor:
    """Eq. 1, the stage-1 positive IoU of objects of size w x h px (any equal shapes):
    min(0.70, max(0.20, 0.25 + gamma * log2(sqrt(w h) / base_size))).
    6 px -> 0.20, 12 -> 0.25, 24 -> 0.40, 48 -> 0.55, >= 96 -> 0.70."""
    size = (w * h).clamp(min=1e-12).sqrt()
    return (T_BASE + gamma * torch.log2(size / base_size)).clamp(T_MIN, T_MAX)


def assign(iou: Tensor, pos_thr: Tensor, neg_thr: float,
           min_low_quality: float = 0.0) -> tuple[Tensor, Tensor]:
    """Anchor labels from IoUs with per-object positive thresholds.

    iou (G, A) objects x anchors, pos_thr (G,) -> labels (A,) float 1 positive / 0 negative /
    -1 ignored, and gt (A,) long, the object of each positive anchor (-1 elsewhere).
    Positive: IoU >= pos_thr of some object (that object with the highest IoU), or an
    object's best anchor (ties included, IoU > min_low_quality; turns only non-positive
    anchors positive).
    Negative: IoU < neg_thr with every object. Ignored: the rest."""
    num_anchors = iou.shape[1]
    labels = iou.new_zeros(num_anchors)
    gt = torch.full((num_anchors,), -1, dtype=torch.long, device=iou.device)
    if iou.shape[0] == 0:
        return labels, gt
    labels[iou.max(0).values >= neg_thr] = -1.0
    qualified = torch.where(iou >= pos_thr[:, None], iou, iou.new_tensor(-1.0))
    best_qualified, gt = qualified.max(0)
    pos = best_qualified >= 0
    best = iou.max(1, keepdim=True).values                       # (G, 1)
    low_quality = (iou == best) & (best > min_low_quality)       # (G, A)
    extra = low_quality.any(0) & ~pos
    gt = torch.where(extra, (low_quality * iou).argmax(0), gt)
    pos = pos | extra
    labels[pos] = 1.0
    return labels, torch.where(pos, gt, torch.full_like(gt, -1))


def assign_stage1(anchors: Tensor, gt_boxes: Tensor, crpn: CRPNParams) -> tuple[Tensor, Tensor]:
    """Area-based anchor mining (sec. 3.2, eq. 1): anchors (A, 4), gt_boxes (G, 4) xyxy px ->
    `assign` labels (A,) and object indices (A,) with thresholds T(w, h) and crpn.stage1_neg_iou."""
    w, h = gt_boxes[:, 2] - gt_boxes[:, 0], gt_boxes[:, 3] - gt_boxes[:, 1]
    thr = adaptive_threshold(w, h, crpn.base_size, crpn.gamma)
    return assign(box_iou(gt_boxes, anchors), thr, crpn.stage1_neg_iou)


def level_anchors(height: int, width: int, stride: int, size: float,
                  device: torch.device | None = None) -> Tensor:
    """One size x size anchor centred on each cell (x * stride, y * stride) px, cells in
    row-major order (as torchvision's AnchorGenerator): (height * width, 4) xyxy px."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                            torch.arange(width, device=device, dtype=torch.float32),
                            indexing="ij")
    centres = torch.stack([xs, ys, xs, ys], -1).reshape(-1, 4) * stride
    return centres + centres.new_tensor([-0.5, -0.5, 0.5, 0.5]) * size


def adaptive_offsets(boxes: Tensor, stride: int, height: int, width: int) -> Tensor:
    """DeformConv2d offsets that move a 3x3 kernel's taps onto each cell's box (Cascade RPN's
    adaptive convolution, used by sec. 3.2).

    boxes (B, height * width, 4) xyxy px, one per cell (row-major) -> offsets
    (B, 18, height, width) in feature cells, (dy, dx) per tap, taps row-major. Tap (ky, kx) in
    {-1, 0, 1}^2 of the regular grid sits at (y + ky, x + kx); on the box it sits at
    (cy + ky h / 2, cx + kx w / 2) / stride (box centre, edges and corners). A box of
    2 x 2 cells centred on its cell gives zero offsets."""
    k = torch.arange(-1.0, 2.0, device=boxes.device, dtype=boxes.dtype)
    ky, kx = (t.reshape(-1) for t in torch.meshgrid(k, k, indexing="ij"))   # (9,) each
    ys, xs = torch.meshgrid(torch.arange(height, device=boxes.device, dtype=boxes.dtype),
                            torch.arange(width, device=boxes.device, dtype=boxes.dtype),
                            indexing="ij")
    b = boxes / stride                                                       # in cells
    cx, cy = (b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2         # (B, HW)
    half_w, half_h = (b[..., 2] - b[..., 0]) / 2, (b[..., 3] - b[..., 1]) / 2
    dx = (cx - xs.reshape(-1))[..., None] + kx * (half_w[..., None] - 1)      # (B, HW, 9)
    dy = (cy - ys.reshape(-1))[..., None] + ky * (half_h[..., None] - 1)
    offsets = torch.stack([dy, dx], -1).reshape(len(boxes), height * width, 18)
    return offsets.permute(0, 2, 1).reshape(len(boxes), 18, height, width)


def clip_to_images(boxes: Tensor, image_sizes: list[tuple[int, int]]) -> Tensor:
    """boxes (B, N, 4) xyxy px clipped to each image's true (H, W) (not the padding)."""
    limits = boxes.new_tensor([[w, h, w, h] for h, w in image_sizes])[:, None]   # (B, 1, 4)
    return torch.minimum(boxes.clamp(min=0), limits)


def select_proposals(boxes: list[Tensor], logits: list[Tensor],
                     image_sizes: list[tuple[int, int]], pre_nms: int, post_nms: int,
                     nms_iou: float) -> list[Tensor]:
    """Per level l boxes[l] (B, N_l, 4) and objectness logits[l] (B, N_l) -> per image the
    top `pre_nms` of each level, clipped, without tiny boxes, NMS per level, the best
    `post_nms` overall: (N_i, 4) xyxy px, best first (as torchvision's filter_proposals)."""
    out = []
    for i, size in enumerate(image_sizes):
        picked, scores, levels = [], [], []
        for level, (b, s) in enumerate(zip(boxes, logits)):
            top = s[i].topk(min(pre_nms, s.shape[1])).indices
            picked.append(b[i, top])
            scores.append(s[i, top])
            levels.append(torch.full_like(top, level))
        b = clip_boxes_to_image(torch.cat(picked), size)
        s, lv = torch.cat(scores), torch.cat(levels)
        keep = remove_small_boxes(b, MIN_SIZE)
        b, s, lv = b[keep], s[keep], lv[keep]
        keep = batched_nms(b, s, lv, nms_iou)[:post_nms]
        out.append(b[keep])
    return out


def stage1_loss(anchors: Tensor, boxes: Tensor, targets: list[dict[str, Tensor]],
                crpn: CRPNParams) -> Tensor:
    """Coarse regression loss L_reg^c (eq. 2, unweighted): anchors (N, 4) of all levels,
    boxes (B, N, 4) their decoded stage-1 boxes -> IoU loss summed over positive anchors
    / (B crpn.stage2_samples), the normaliser of the stage-2 losses (see the module doc)."""
    total = boxes.sum() * 0.0                       # keeps the graph when nothing is positive
    for b, target in enumerate(targets):
        gt = target["boxes"].to(boxes)
        labels, idx = assign_stage1(anchors, gt, crpn)
        pos = labels == 1
        if pos.any():
            total = total + generalized_box_iou_loss(boxes[b, pos], gt[idx[pos]],
                                                     reduction="sum")
    return total / (boxes.shape[0] * crpn.stage2_samples)


def stage2_loss(refs: Tensor, logits: Tensor, boxes: Tensor,
                targets: list[dict[str, Tensor]], crpn: CRPNParams,
                sampler: det_utils.BalancedPositiveNegativeSampler) -> tuple[Tensor, Tensor]:
    """Fine losses (eq. 2, unweighted): refs (B, N, 4) stage-1 boxes, logits (B, N) objectness,
    boxes (B, N, 4) decoded stage-2 boxes -> (BCE over the sampled anchors, IoU loss summed
    over sampled positives / sampled count). MaxIoU assignment on the stage-1 boxes."""
    labels, matched = [], []
    for b, target in enumerate(targets):
        gt = target["boxes"].to(refs)
        thr = gt.new_full((len(gt),), crpn.stage2_pos_iou)
        lab, idx = assign(box_iou(gt, refs[b]), thr, crpn.stage2_neg_iou,
                          crpn.stage2_min_pos_iou)
        labels.append(lab)
        matched.append(gt[idx.clamp(min=0)] if len(gt) else torch.zeros_like(refs[b]))
    pos_masks, neg_masks = sampler(labels)
    pos = torch.where(torch.cat(pos_masks))[0]
    neg = torch.where(torch.cat(neg_masks))[0]
    sampled = torch.cat([pos, neg])
    if sampled.numel() == 0:
        zero = logits.sum() * 0.0 + boxes.sum() * 0.0
        return zero, zero
    objectness = F.binary_cross_entropy_with_logits(logits.reshape(-1)[sampled].float(),
                                                    torch.cat(labels)[sampled])
    box = generalized_box_iou_loss(boxes.reshape(-1, 4)[pos], torch.cat(matched)[pos],
                                   reduction="sum") / sampled.numel()
    return objectness, box


class LevelOutput(NamedTuple):
    """One FPN level of one batch; N = cells of the level."""
    anchors: Tensor   # (N, 4) xyxy px
    boxes1: Tensor    # (B, N, 4) stage-1 boxes (with gradient, for L_reg^c)
    refs: Tensor      # (B, N, 4) stage-1 boxes clipped to the image, detached
    logits: Tensor    # (B, N) stage-2 objectness logits
    boxes2: Tensor    # (B, N, 4) stage-2 boxes = the proposals before selection


class CascadeRPN(nn.Module):
    """CFINet's CRPN with torchvision RegionProposalNetwork's forward signature."""

    def __init__(self, in_channels: int, params: C3DetParams):
        super().__init__()
        crpn = params.crpn
        self.crpn = crpn
        self.anchor_sizes = [float(s) for s in params.anchor_sizes]
        d = crpn.stage1_dilation
        self.stage1_conv = nn.Conv2d(in_channels, in_channels, 3, padding=d, dilation=d)
        self.stage1_reg = nn.Conv2d(in_channels, 4, 1)
        self.stage2_conv = DeformConv2d(in_channels, in_channels, 3, padding=1)
        self.stage2_cls = nn.Conv2d(in_channels, 1, 1)
        self.stage2_reg = nn.Conv2d(in_channels, 4, 1)
        for layer in (self.stage1_conv, self.stage2_conv, self.stage2_cls):
            nn.init.normal_(layer.weight, std=0.01)     # as torchvision's RPNHead
            nn.init.constant_(layer.bias, 0)
        prior = crpn.objectness_prior
        nn.init.constant_(self.stage2_cls.bias, math.log(prior / (1 - prior)))
        for layer in (self.stage1_reg, self.stage2_reg):  # zero deltas: boxes start as anchors
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.coder1 = det_utils.BoxCoder(STAGE1_WEIGHTS)
        self.coder2 = det_utils.BoxCoder(STAGE2_WEIGHTS)
        self.sampler = det_utils.BalancedPositiveNegativeSampler(crpn.stage2_samples, 0.5)
        # the names torchvision's RegionProposalNetwork uses
        self._pre_nms_top_n = {"training": params.rpn_proposals_train,
                               "testing": max(1000, params.rpn_proposals_test)}
        self._post_nms_top_n = {"training": params.rpn_proposals_train,
                                "testing": params.rpn_proposals_test}
        self.nms_thresh = crpn.nms_iou
        self.min_size = MIN_SIZE

    def pre_nms_top_n(self) -> int:
        return self._pre_nms_top_n["training" if self.training else "testing"]

    def post_nms_top_n(self) -> int:
        return self._post_nms_top_n["training" if self.training else "testing"]

    def stage1(self, x: Tensor, stride: int, size: float) -> tuple[Tensor, Tensor, Tensor]:
        """The coarse stage on one level: x (B, C, H, W) -> anchors (H W, 4), stage-1 features
        (B, C, H, W) (stage 2 reads them) and stage-1 boxes (B, H W, 4) xyxy px."""
        batch, _, height, width = x.shape
        anchors = level_anchors(height, width, stride, size, x.device)
        t1 = F.relu(self.stage1_conv(x))
        deltas1 = self.stage1_reg(t1).permute(0, 2, 3, 1).reshape(-1, 4).float()
        boxes1 = self.coder1.decode_single(deltas1, anchors.repeat(batch, 1))
        return anchors, t1, boxes1.reshape(batch, -1, 4)

    def level(self, x: Tensor, stride: int, size: float,
              image_sizes: list[tuple[int, int]]) -> LevelOutput:
        """Both stages on one level: x (B, C, H, W) -> LevelOutput."""
        batch, _, height, width = x.shape
        anchors, t1, boxes1 = self.stage1(x, stride, size)
        refs = clip_to_images(boxes1.detach(), image_sizes)
        offsets = adaptive_offsets(refs, stride, height, width)
        # float32 under autocast (deform_conv2d has no bfloat16 CPU kernel; torchvision's CUDA
        # autocast runs it in float32 too)
        with torch.autocast(x.device.type, enabled=False):
            t2 = F.relu(self.stage2_conv(t1.float(), offsets.float()))
        logits = self.stage2_cls(t2).reshape(batch, -1)
        deltas2 = self.stage2_reg(t2).permute(0, 2, 3, 1).reshape(-1, 4).float()
        boxes2 = self.coder2.decode_single(deltas2, refs.reshape(-1, 4)).reshape(batch, -1, 4)
        return LevelOutput(anchors, boxes1, refs, logits, boxes2)

    def forward(self, images: ImageList, features: dict[str, Tensor],
                targets: list[dict[str, Tensor]] | None = None
                ) -> tuple[list[Tensor], dict[str, Tensor]]:
        feats = list(features.values())
        if len(feats) != len(self.anchor_sizes):
            raise ValueError(f"CascadeRPN: {len(feats)} feature levels but "
                             f"{len(self.anchor_sizes)} anchor sizes (one per level P2..P5)")
        padded_w = images.tensors.shape[-1]
        levels = [self.level(f, padded_w // f.shape[-1], size, images.image_sizes)
                  for f, size in zip(feats, self.anchor_sizes)]
        with torch.no_grad():
            proposals = select_proposals([lv.boxes2 for lv in levels],
                                         [lv.logits for lv in levels], images.image_sizes,
                                         self.pre_nms_top_n(), self.post_nms_top_n(),
                                         self.nms_thresh)
        if not self.training:
            return proposals, {}
        if targets is None:
            raise ValueError("CascadeRPN: training needs targets")
        return proposals, self.losses(levels, targets)

    def losses(self, levels: list[LevelOutput], targets: list[dict[str, Tensor]]
               ) -> dict[str, Tensor]:
        """Eq. 2 with the weights of params.crpn, each term under its own name."""
        cat = lambda name: torch.cat([getattr(lv, name) for lv in levels], 1)  # noqa: E731
        anchors = torch.cat([lv.anchors for lv in levels])
        coarse = stage1_loss(anchors, cat("boxes1"), targets, self.crpn)
        objectness, fine = stage2_loss(cat("refs"), cat("logits"), cat("boxes2"), targets,
                                       self.crpn, self.sampler)
        return {"loss_crpn_stage1": self.crpn.iou_loss_weight * coarse,
                "loss_crpn_objectness": self.crpn.cls_loss_weight * objectness,
                "loss_crpn_box": self.crpn.iou_loss_weight * fine}

