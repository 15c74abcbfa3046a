"""User-input Enforcing Loss (UEL) on the RoI head, and the RoI head that computes it.

C3Det's UEL (reference code: RoI head only, cross-entropy, weight 1.0): every positive RoI
(matched to a ground-truth object) whose box overlaps (IoU > 0) the box of an object the user
clicked gets an extra cross-entropy towards the clicked object's class. When RoIs overlap
several clicked boxes, the one with the largest IoU sets the class.

`ClickRoIHeads` is torchvision's RoIHeads with two changes, both in `forward` (boxes only: no
mask / keypoint heads):
- training adds `loss_uel` (targets[i]["clicked"], (N,) bool, says which objects were clicked;
  missing = none clicked);
- inference can also return, per image, every RoI's class-specific boxes and class
  objectness (1 - P(background)) before thresholds and NMS ("candidate_boxes" (M, C, 4),
  "candidate_objectness" (M,)), which c3det.click_to_box ranks when no detection explains a
  click.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.ops import box_iou, clip_boxes_to_image


def uel_selection(rois: Tensor, roi_labels: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                  clicked: Tensor) -> tuple[Tensor, Tensor]:
    """Which RoIs UEL pushes, and towards which class.

    rois (M, 4), roi_labels (M,) (0 = background), gt_boxes (N, 4), gt_labels (N,) 1..C,
    clicked (N,) bool -> (selected (M,) bool, target class (M,) int64; valid where selected).
    """
    target = torch.zeros_like(roi_labels)
    if not bool(clicked.any()) or rois.numel() == 0:
        return torch.zeros_like(roi_labels, dtype=torch.bool), target
    iou = box_iou(rois, gt_boxes[clicked])                 # (M, N_clicked)
    best_iou, best = iou.max(1)
    selected = (roi_labels > 0) & (best_iou > 0)
    target = torch.where(selected, gt_labels[clicked][best], target)
    return selected, target


class ClickRoIHeads(RoIHeads):
    def __init__(self, *args, uel_weight: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.uel_weight = uel_weight

    @classmethod
    def like(cls, heads: RoIHeads, uel_weight: float) -> "ClickRoIHeads":
        """The same box head and settings as an existing torchvision RoIHeads."""
        new = cls.__new__(cls)
        new.__dict__.update(heads.__dict__)   # shares the submodules and settings
        new.uel_weight = uel_weight
        return new

    def forward(self, features, proposals, image_shapes, targets=None, candidates: bool = False):
        if self.training:
            proposals, _, labels, regression_targets = self.select_training_samples(proposals,
                                                                                    targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels,
                                                          regression_targets)
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
            if self.uel_weight > 0:
                losses["loss_uel"] = self.uel_weight * self._uel(class_logits, proposals,
                                                                 labels, targets)
            return [], losses
        return self.detect(class_logits, box_regression, proposals, image_shapes, candidates), {}

    def detect(self, class_logits: Tensor, box_regression: Tensor, proposals: list[Tensor],
               image_shapes: list[tuple[int, int]], candidates: bool = False):
        """Box-predictor outputs -> per-image detections (+ candidates, see module doc)."""
        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression,
                                                            proposals, image_shapes)
        result = [{"boxes": b, "labels": l, "scores": s} for b, s, l in zip(boxes, scores, labels)]
        if candidates:
            per_image = [len(p) for p in proposals]
            cand = self.box_coder.decode(box_regression, proposals).split(per_image)
            probs = F.softmax(class_logits, -1).split(per_image)
            for r, b, p, shape in zip(result, cand, probs, image_shapes):
                r["candidate_boxes"] = clip_boxes_to_image(b, shape)[:, 1:]   # (M, C, 4)
                r["candidate_objectness"] = 1 - p[:, 0]                       # (M,)
        return result

    def _uel(self, class_logits: Tensor, proposals: list[Tensor], labels: list[Tensor],
             targets: list[dict[str, Tensor]]) -> Tensor:
        selected, wanted = [], []
        for rois, roi_labels, t in zip(proposals, labels, targets):
            clicked = t.get("clicked")
            if clicked is None:
                clicked = torch.zeros(len(t["labels"]), dtype=torch.bool, device=rois.device)
            s, w = uel_selection(rois, roi_labels, t["boxes"], t["labels"], clicked.bool())
            selected.append(s)
            wanted.append(w)
        selected, wanted = torch.cat(selected), torch.cat(wanted)
        if not bool(selected.any()):
            return class_logits.sum() * 0.0
        return F.cross_entropy(class_logits[selected], wanted[selected])
