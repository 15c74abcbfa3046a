"""`order.select.strategy: uncertainty`: the images whose boxes the model is least sure of.

Per box: the uncertainty of its class score plus `localisation_weight` x a localisation
term; per image: a class-balanced aggregate (`aggregate`: mean, max or sum over its boxes).

- Class-score uncertainty. A predictor's scored() keeps each box's top class and its score
  s (c3det.detectors), so the distribution is (s, 1 - s): ``entropy`` is its binary entropy
  in bits (1 at s = 0.5), ``margin`` is 1 - |2s - 1| (1 - the margin between the top class
  and the rest).
- Localisation: the boxes that survived the detector's class-wise NMS and still overlap
  disagree about where (same class) or what (another class) the object is. A box's term is
  max over the others of IoU x min(1, their score / its score): an overlapping rival as
  confident as the box itself counts fully, a faint one little; a lone box scores 0. It
  costs nothing beyond the forward the scores came from.
- Class balance: a box of class c weighs (L + C) / (C (n_c + 1)), n_c the class's labelled
  boxes, L their total, C the classes seen: rare classes count more, normalised so equal
  counts weigh 1 (PPAL's class-difficulty weighting, with counts in place of difficulty).
"""
from __future__ import annotations

import numpy as np

from features.selection import ImageBoxes, Ranking, SelectionRequest, Strategy, register

_EPS = 1e-6


def score_uncertainty(scores: np.ndarray, kind: str = "entropy") -> np.ndarray:
    """Uncertainty in [0, 1] of boxes scored `scores` (top class score each)."""
    s = np.clip(np.asarray(scores, np.float64), _EPS, 1 - _EPS)
    if kind == "margin":
        return 1.0 - np.abs(2.0 * s - 1.0)
    return -(s * np.log2(s) + (1 - s) * np.log2(1 - s))


def iou_xyxy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, _EPS), 0.0)


def localisation_term(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per box: max over the other boxes of IoU x min(1, their score / its score)."""
    n = len(scores)
    if n < 2:
        return np.zeros(n)
    s = np.maximum(np.asarray(scores, np.float64), _EPS)
    overlap = iou_xyxy(boxes, boxes)
    np.fill_diagonal(overlap, 0.0)
    rival = np.minimum(1.0, s[None, :] / s[:, None])
    return (overlap * rival).max(axis=1)


def class_weights(class_counts: dict[str, int], classes: set[str]) -> dict[str, float]:
    """Inverse-frequency weight per class (see the module docstring); 1 for every class
    when nothing is counted."""
    names = sorted(set(class_counts) | set(classes))
    if not names:
        return {}
    total = sum(class_counts.get(c, 0) for c in names)
    return {c: (total + len(names)) / (len(names) * (class_counts.get(c, 0) + 1))
            for c in names}


def box_uncertainty(image: ImageBoxes, params) -> np.ndarray:
    """Per box: class-score uncertainty + localisation_weight x localisation term."""
    u = score_uncertainty(image.scores, params.uncertainty)
    if params.localisation_weight:
        u = u + params.localisation_weight * localisation_term(image.boxes, image.scores)
    return u


def image_uncertainty(image: ImageBoxes, params, weights: dict[str, float]
                      ) -> tuple[float, str]:
    """(score, reason) of one image: the class-weighted aggregate of the uncertainties of
    its boxes scoring at least min_box_score."""
    image = _confident(image, params.min_box_score)
    if len(image.scores) == 0:
        return 0.0, "no box scored: nothing the model is unsure of"
    w = np.array([weights.get(c, 1.0) if params.class_balance else 1.0
                  for c in image.classes])
    u = box_uncertainty(image, params) * w
    score = {"mean": u.mean, "max": u.max, "sum": u.sum}[params.aggregate]()
    worst = int(np.argmax(u))
    return float(score), (f"uncertainty {score:.3f} ({params.aggregate} of {len(u)} boxes; "
                          f"least sure: {image.classes[worst]} at score "
                          f"{float(image.scores[worst]):.2f})")


def _confident(image: ImageBoxes, min_score: float) -> ImageBoxes:
    keep = np.asarray(image.scores) >= min_score
    return ImageBoxes(np.asarray(image.boxes).reshape(-1, 4)[keep],
                      np.asarray(image.scores)[keep],
                      [c for c, k in zip(image.classes, keep) if k])


def uncertainty_scores(request: SelectionRequest) -> tuple[np.ndarray, list[str]]:
    """Every candidate's uncertainty and the reason, in candidate order."""
    seen = {c for image in request.boxes for c in image.classes}
    weights = class_weights(request.class_counts, seen)
    pairs = [image_uncertainty(image, request.params, weights) for image in request.boxes]
    return np.array([s for s, _ in pairs], np.float64), [r for _, r in pairs]


def most_uncertain_first(scores: np.ndarray) -> np.ndarray:
    """Rows by descending score; ties keep the pool's order (stable)."""
    return np.argsort(-np.asarray(scores), kind="stable").astype(np.int64)


def _select(request: SelectionRequest) -> Ranking:
    scores, reasons = uncertainty_scores(request)
    return Ranking(most_uncertain_first(scores), scores, reasons)


register(Strategy("uncertainty", uses_model=True, uses_embeddings=False, select=_select))
