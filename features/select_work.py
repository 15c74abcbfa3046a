"""`order.select.strategy: work`: the images on which the current model saves annotators the
most time now, by its own held-out calibration.

Each box shown (score >= the model's min_score) is accepted with probability p(score),
read from the model's calibration on the held-out images (`calibrate`: the share of its
boxes that matched a true box, per score bin). An accepted box saves drawing it (T =
box_seconds); a wrong one costs its deletion (removal_fraction x T), the loop paper's WT.
An image's score is the expected seconds saved:

    sum over shown boxes of  p(s) T - (1 - p(s)) removal_fraction T

The highest first: the lead trades what the model would learn for time saved now. Without
a calibration (no held-out images) p(s) = s, the score read as a probability, which the
reason says.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.select_uncertainty import iou_xyxy
from features.selection import ImageBoxes, Ranking, SelectionRequest, Strategy, register

PRIOR_WEIGHT = 2.0  # pseudo-boxes per bin pulling its rate toward the bin's mid score


@dataclass
class Calibration:
    """Acceptance rate of a model's boxes per score bin: bin k is [edges[k], edges[k+1])."""
    edges: list[float]
    rates: list[float]
    boxes: list[int]          # boxes per bin the rate was measured on

    def accept_probability(self, scores: np.ndarray) -> np.ndarray:
        k = np.clip(np.searchsorted(self.edges, scores, side="right") - 1, 0,
                    len(self.rates) - 1)
        return np.asarray(self.rates)[k]

    def to_json(self) -> dict:
        return {"edges": self.edges, "rates": self.rates, "boxes": self.boxes}

    @classmethod
    def from_json(cls, d: dict) -> "Calibration":
        return cls(list(d["edges"]), list(d["rates"]), list(d["boxes"]))


def calibrate(scores: np.ndarray, accepted: np.ndarray, bins: int = 10) -> Calibration:
    """Per score bin of width 1/bins: the share of boxes accepted, smoothed toward the bin's
    mid score by PRIOR_WEIGHT pseudo-boxes (a bin with few boxes stays near its score)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    k = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, bins - 1)
    n = np.bincount(k, minlength=bins).astype(float)
    hits = np.bincount(k, weights=np.asarray(accepted, float), minlength=bins)
    mid = (edges[:-1] + edges[1:]) / 2
    rates = (hits + PRIOR_WEIGHT * mid) / (n + PRIOR_WEIGHT)
    return Calibration(edges.tolist(), rates.tolist(), n.astype(int).tolist())


def match_accepted(pred: ImageBoxes, truth_boxes: np.ndarray, truth_classes: list[str],
                   iou: float) -> np.ndarray:
    """Per predicted box: would an annotator keep it? Greedy by score, each true box once:
    same class and IoU >= iou (the workload diff's rule for an accepted box)."""
    accepted = np.zeros(len(pred.scores), bool)
    if len(pred.scores) == 0 or len(truth_classes) == 0:
        return accepted
    overlap = iou_xyxy(pred.boxes, truth_boxes)
    same = np.asarray(pred.classes)[:, None] == np.asarray(truth_classes)[None, :]
    overlap = np.where(same, overlap, 0.0)
    free = np.ones(len(truth_classes), bool)
    for b in np.argsort(-np.asarray(pred.scores), kind="stable"):
        candidates = np.where(free, overlap[b], 0.0)
        t = int(np.argmax(candidates))
        if candidates[t] >= iou:
            accepted[b], free[t] = True, False
    return accepted


def expected_saving(image: ImageBoxes, request: SelectionRequest) -> tuple[float, str]:
    """(seconds saved, reason) of one image by the module docstring's formula."""
    scores = np.asarray(image.scores, float)
    shown = scores[scores >= request.min_score]
    if request.calibration is not None:
        p, source = request.calibration.accept_probability(shown), "held-out calibration"
    else:
        p, source = shown, "no calibration: score as probability"
    t, r = request.cost.box_seconds, request.cost.removal_fraction
    saved = float(np.sum(p * t - (1 - p) * r * t))
    return saved, (f"predicted saving {saved:.1f} s: {float(p.sum()):.1f} of {len(shown)} "
                   f"boxes shown from score {request.min_score:.2f} expected accepted "
                   f"({source})")


def _select(request: SelectionRequest) -> Ranking:
    pairs = [expected_saving(image, request) for image in request.boxes]
    scores = np.array([s for s, _ in pairs], float)
    return Ranking(np.argsort(-scores, kind="stable").astype(np.int64), scores,
                   [r for _, r in pairs])


register(Strategy("work", uses_model=True, uses_embeddings=False, select=_select))
