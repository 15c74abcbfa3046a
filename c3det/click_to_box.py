"""Guarantee (2): every click ends with a box of the clicked class covering the click.

The user said "an object of class c is here"; the reference C3Det only hoped the network would
listen. After the detector ran, `explain_clicks` goes through the clicks:

1. A detection of the clicked class that contains the click explains it (the best-scoring one
   is marked `refined`).
2. Otherwise the candidates (every proposal's class-c box before NMS, see "candidate_boxes" in
   c3det.model) that contain the click are ranked by the box-centre score of Papadopoulos et
   al. (seeds/001) times objectness, times (when the class's typical size is known) a
   box-size score in the spirit of the same paper's box-area score:
        exp(-||c_box - click||^2 / (2 sigma^2)) * objectness
            * exp(-log(area / prior_area)^2 / (2 size_sigma^2))
   and the best one becomes a detection of class c.
3. With no candidate containing the click, a box of the class's typical size (median width
   and height of its training boxes, c3det.train.class_box_sizes) centred on the click, or
   a default-size square for a class never seen in training. A barely trained model's
   candidates are poor, and then this prior is what makes a click worth its cost.

A box added in 2 or 3 gets score 1.0 (existence and class come from the user; only its extent
is the model's guess) and replaces detections of other classes that contain the click and
overlap it with IoU >= `replace_iou` (the same object, mislabelled). Added and explaining boxes
are flagged `refined` (provenance `click_refined` in c3det.predict).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou


def contains(boxes: Tensor, xy: Tensor) -> Tensor:
    """boxes (D, 4), points (K, 2) -> (K, D) bool: point k inside box d (edges included)."""
    x, y = xy[:, 0:1], xy[:, 1:2]
    return (boxes[None, :, 0] <= x) & (x <= boxes[None, :, 2]) & \
           (boxes[None, :, 1] <= y) & (y <= boxes[None, :, 3])


def relabel_by_clicks(detection: dict[str, Tensor], clicks: Tensor) -> dict[str, Tensor]:
    """Passthrough's click stage: boxes containing a click (x, y, class 0..C-1) take the
    class of the last such click; nothing else changes."""
    labels = detection["labels"]
    if len(clicks) == 0 or len(labels) == 0:
        return detection
    inside = contains(detection["boxes"], clicks[:, :2].to(detection["boxes"]))   # (K, D)
    order = torch.arange(1, len(clicks) + 1, device=labels.device)[:, None]
    last = (inside * order).argmax(0)                                              # (D,)
    new = torch.where(inside.any(0), clicks[last, 2].long().to(labels) + 1, labels)
    return {**detection, "labels": new}


def centre_score(boxes: Tensor, xy: Tensor, sigma: float) -> Tensor:
    """boxes (M, 4), one point (2,) -> (M,): exp(-||c_box - click||^2 / (2 sigma^2))."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    return torch.exp(-((centres - xy) ** 2).sum(1) / (2 * sigma ** 2))


def size_score(boxes: Tensor, prior_wh: tuple[float, float], size_sigma: float) -> Tensor:
    """boxes (M, 4) -> (M,): exp(-log(area / prior area)^2 / (2 size_sigma^2))."""
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1e-6)
    ratio = torch.log(area / max(prior_wh[0] * prior_wh[1], 1e-6))
    return torch.exp(-ratio ** 2 / (2 * size_sigma ** 2))


def explain_clicks(detection: dict[str, Tensor], clicks: Tensor, image_size: tuple[int, int],
                   sigma: float = 4.0, default_size: float = 12.0,
                   replace_iou: float = 0.5, class_sizes: list | None = None,
                   size_sigma: float = 0.5) -> dict[str, Tensor]:
    """detection: {"boxes" (D,4), "labels" (D,) 1..C, "scores" (D,), optional "candidate_boxes"
    (M, C, 4) and "candidate_objectness" (M,)}, clicks (K, 3) (x, y, class 0..C-1) in the same
    px, image_size (H, W), class_sizes: per class (w, h) px or None. Returns boxes / labels /
    scores / refined (D',) bool."""
    boxes, labels, scores = detection["boxes"], detection["labels"], detection["scores"]
    refined = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    cand_boxes = detection.get("candidate_boxes")
    cand_obj = detection.get("candidate_objectness")
    h, w = image_size
    for x, y, c in clicks.tolist():  # a handful of clicks per image: clarity beats vectorising
        xy = boxes.new_tensor([x, y])
        label = int(c) + 1
        hit = contains(boxes, xy[None])[0] & (labels == label)
        if hit.any():
            best = torch.where(hit)[0][scores[hit].argmax()]
            refined[best] = True
            continue
        new = None
        prior = class_sizes[int(c)] if class_sizes and int(c) < len(class_sizes) else None
        if cand_boxes is not None and len(cand_boxes):
            cb = cand_boxes[:, int(c)]
            inside = contains(cb, xy[None])[0]
            if inside.any():
                rank = centre_score(cb[inside], xy, sigma) * cand_obj[inside]
                if prior is not None:
                    rank = rank * size_score(cb[inside], prior, size_sigma)
                new = cb[inside][rank.argmax()]
        if new is None:
            bw, bh = prior if prior is not None else (default_size, default_size)
            new = boxes.new_tensor([max(x - bw / 2, 0), max(y - bh / 2, 0),
                                    min(x + bw / 2, w), min(y + bh / 2, h)])
        # drop other-class detections of the same object
        same = contains(boxes, xy[None])[0] & (labels != label) & \
            (box_iou(boxes, new[None])[:, 0] >= replace_iou)
        keep = ~same
        boxes = torch.cat([boxes[keep], new[None]])
        labels = torch.cat([labels[keep], labels.new_tensor([label])])
        scores = torch.cat([scores[keep], scores.new_tensor([1.0])])
        refined = torch.cat([refined[keep], refined.new_tensor([True])])
    return {"boxes": boxes, "labels": labels, "scores": scores, "refined": refined}
