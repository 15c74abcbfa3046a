"""mAP of oriented boxes, DOTA devkit task-1 style (dota_evaluation_task1.py), on LabelSets.

Per class, over all images:

- detections go best score first; each one is compared with the ground truth of its image
  and class by polygon IoU (tinyloop.boxes.polygon_iou_matrix) and takes the object of
  highest IoU. IoU > `iou` (strictly, as the devkit): a true positive if that object is not
  yet taken, else a false positive (a duplicate); IoU <= `iou`: a false positive;
- an object marked `difficult` counts in neither direction: a detection whose best object
  is difficult is neither true nor false positive, and difficult objects are not in the
  recall's denominator;
- AP is VOC's: `use_07_metric=True` (what the devkit's evaluation script uses) is the
  11-point interpolated AP (max precision at recall >= 0, 0.1, ..., 1), False the area under
  the precision envelope (VOC 2010+).

mAP is the mean over classes with (non-difficult) ground truth. Values are in percent, as
c3det.evaluate.coco_map's.

Beyond the devkit, as c3det.evaluate.coco_map does:

- ignore regions: a detection whose polygon lies for at least `ignore_overlap` of its area
  inside one ignore region of its image is dropped (tinyloop.boxes' rule on polygons);
- AP by object size, sqrt(w * h) of the oriented box with edges `size_buckets` (a size on an
  edge belongs to the bucket above it): objects of other sizes are treated like difficult
  ones, and an unmatched detection of another size is not a false positive there (COCO's
  area-range rule).

An annotation without an oriented box is evaluated as its axis-aligned box (a polygon at
angle 0). A prediction's score is `Annotation.score` (provenance); none counts as 1.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from c3det.config import EvalParams
from c3det.evaluate import size_labels
from tinyloop.annotations import Annotation, ImageLabels, LabelSet
from tinyloop.boxes import polygon_iou_matrix, polygons_in_ignore_regions

ALL = "all"  # the view over every object size


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """AP (0..1) from (D,) recall and precision after each detection, best score first."""
    if use_07_metric:
        # the devkit's thresholds are np.arange(0, 1.1, 0.1), whose 0.30000000000000004
        # misses a recall of exactly 0.3; k / 10 is the 11-point rule as written
        return float(sum(precision[recall >= t].max(initial=0.0)
                         for t in np.arange(11) / 10) / 11)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]      # the precision envelope
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def greedy_match(ious: np.ndarray, ignored: np.ndarray, iou: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The devkit's matching of one image's detections of one class.

    ious: (D, G) IoU, detections (rows) best score first; ignored: (G,) bool, objects that
    count in neither direction (difficult). Returns (tp, fp), each (D,) bool; a detection
    whose best object is ignored is neither.
    """
    n_det, n_gt = ious.shape
    tp, fp = np.zeros(n_det, bool), np.zeros(n_det, bool)
    taken = np.zeros(n_gt, bool)
    for d in range(n_det):
        j = int(np.argmax(ious[d])) if n_gt else -1
        if j < 0 or ious[d, j] <= iou:
            fp[d] = True
        elif not ignored[j]:
            tp[d], fp[d] = not taken[j], taken[j]
            taken[j] = True
    return tp, fp


@dataclass
class _Tally:
    """One class in one size view: what the AP needs, gathered image by image."""
    positives: int = 0                                   # objects that count for recall
    scores: list[np.ndarray] = field(default_factory=list)
    tp: list[np.ndarray] = field(default_factory=list)
    fp: list[np.ndarray] = field(default_factory=list)

    def add(self, scores: np.ndarray, tp: np.ndarray, fp: np.ndarray, positives: int):
        counted = tp | fp          # ignored detections leave the curve unchanged: drop them
        self.scores.append(scores[counted])
        self.tp.append(tp[counted])
        self.fp.append(fp[counted])
        self.positives += positives

    def ap(self, use_07_metric: bool) -> float | None:
        """AP in percent; None without objects to find."""
        if not self.positives:
            return None
        scores = np.concatenate([np.zeros(0), *self.scores])
        order = np.argsort(-scores, kind="stable")
        tp = np.cumsum(np.concatenate([np.zeros(0, bool), *self.tp])[order])
        fp = np.cumsum(np.concatenate([np.zeros(0, bool), *self.fp])[order])
        recall = tp / self.positives
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        return 100.0 * voc_ap(recall, precision, use_07_metric)


def _outline(a: Annotation):
    return a.obox if a.obox is not None else a.box


def object_sizes(annotations: list[Annotation]) -> np.ndarray:
    """(N,) sqrt(w * h) px of each oriented box (the axis-aligned box where none)."""
    return np.array([math.sqrt(max(o.w * o.h if a.obox is not None else o.area, 0.0))
                     for a in annotations for o in [_outline(a)]], dtype=np.float64)


def _score(a: Annotation) -> float:
    return 1.0 if a.score is None else float(a.score)


def _kept_detections(labels: ImageLabels, detections: list[Annotation],
                     ignore_overlap: float) -> list[Annotation]:
    """The detections not mostly inside one of the image's ignore regions."""
    if not detections or not labels.ignore:
        return list(detections)
    inside = polygons_in_ignore_regions([_outline(a) for a in detections],
                                        [r.obox if r.obox is not None else r.box
                                         for r in labels.ignore], ignore_overlap)
    return [a for a, drop in zip(detections, inside) if not drop]


def _tally_image(tallies: dict, labels: ImageLabels, detections: list[Annotation],
                 p: EvalParams, buckets: list[str]) -> None:
    """Match one image's detections per class and add them to tallies[class][view]."""
    kept = _kept_detections(labels, detections, p.ignore_overlap)
    for category in {a.category for a in labels.annotations} | {a.category for a in kept}:
        gts = [a for a in labels.annotations if a.category == category]
        dets = sorted((a for a in kept if a.category == category), key=lambda a: -_score(a))
        scores = np.array([_score(a) for a in dets], dtype=np.float64)
        ious = polygon_iou_matrix([_outline(a) for a in dets], [_outline(a) for a in gts])
        difficult = np.array([a.difficult for a in gts], dtype=bool)
        tp, fp = greedy_match(ious, difficult, p.iou)
        tallies[category][ALL].add(scores, tp, fp, int((~difficult).sum()))
        gt_bucket = np.digitize(object_sizes(gts), p.size_buckets)
        det_bucket = np.digitize(object_sizes(dets), p.size_buckets)
        for k, name in enumerate(buckets):
            other_size = difficult | (gt_bucket != k)
            tp, fp = greedy_match(ious, other_size, p.iou)
            tallies[category][name].add(scores, tp, fp & (det_bucket == k),
                                        int((~other_size).sum()))


def _check_predictions(truth: LabelSet, predictions: LabelSet) -> None:
    unknown_images = sorted({im.id for im in predictions} - {im.id for im in truth})
    if unknown_images:
        raise ValueError(f"predictions for {len(unknown_images)} image(s) without ground "
                         f"truth, e.g. {unknown_images[:3]}")
    unknown = sorted({a.category for im in predictions for a in im.annotations}
                     - set(truth.categories))
    if unknown:
        raise ValueError(f"predicted classes {unknown} are not among the ground truth's "
                         f"{truth.categories}")


def dota_map(truth: LabelSet, predictions: LabelSet, params: EvalParams | None = None,
             use_07_metric: bool = True) -> dict:
    """mAP@params.iou of oriented `predictions` against `truth` by polygon IoU (module doc).

    Uses params.iou, params.ignore_overlap and params.size_buckets of c3det's EvalParams.
    Returns {"map", "per_class" {class: AP or None}, "by_size" {bucket: mean AP over the
    classes with objects of that size, or None}, "per_class_by_size", "positives" {class:
    non-difficult objects}, "detections", "iou", "use_07_metric"}; values in percent,
    classes without ground truth are None and left out of the means.
    """
    p = params or EvalParams()
    _check_predictions(truth, predictions)
    buckets = size_labels(p.size_buckets)
    tallies: dict[str, dict[str, _Tally]] = defaultdict(
        lambda: {view: _Tally() for view in (ALL, *buckets)})
    predicted = predictions.by_id()
    for labels in truth:
        detections = predicted[labels.id].annotations if labels.id in predicted else []
        _tally_image(tallies, labels, detections, p, buckets)
    table = {c: {view: tallies[c][view].ap(use_07_metric) if c in tallies else None
                 for view in (ALL, *buckets)} for c in truth.categories}

    def class_mean(view: str) -> float | None:
        values = [row[view] for row in table.values() if row[view] is not None]
        return float(np.mean(values)) if values else None

    return {"map": class_mean(ALL) or 0.0,
            "per_class": {c: row[ALL] for c, row in table.items()},
            "by_size": {b: class_mean(b) for b in buckets},
            "per_class_by_size": {c: {b: row[b] for b in buckets} for c, row in table.items()},
            "positives": {c: tallies[c][ALL].positives if c in tallies else 0
                          for c in truth.categories},
            "detections": sum(len(im.annotations) for im in predictions),
            "iou": p.iou, "use_07_metric": use_07_metric}
