"""A stand-in detector for simulations: the ground truth, degraded at controlled rates.

When no trained interactive detector is at hand (tests, the ranker benchmark on a CPU box),
`DegradedTruthPredictor` plays one with the `predict(image_id, clicks) -> list[Annotation]`
interface of `c3det.predict.Predictor`:

- without clicks it returns each ground-truth object missed with probability `miss`,
  relabeled to another class with probability `relabel`, its corners jittered by
  N(0, jitter * object size), plus Poisson(`false_positives`) spurious boxes; scores are
  higher for right boxes than for wrong ones (so scores carry some, not all, signal);
- every image gets its own difficulty, a multiplier of all those rates drawn uniformly in
  [1 - vary, 1 + vary], so images differ in how wrong they are;
- a click on an object (inside its box grown by 3 px, or within its size of its centre)
  fixes it with probability `fix`; each click of class c also fixes every other wrong
  object of class c with probability `spread` (C3Det's point: a click informs objects of
  its class all over the image).

All random draws are made once per image from (seed, image id), so the same clicks always
give the same boxes. This is NOT a detector: numbers measured with it say how the loop's
bookkeeping behaves at a known error rate, not how good a model is.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from tinyloop.annotations import Annotation, Box, Click, LabelSet, Provenance


@dataclass
class _Draws:
    difficulty: float
    missed: np.ndarray       # (N,) bool
    relabel_to: np.ndarray   # (N,) int, -1 = keep the class
    jitter: np.ndarray       # (N, 4) px
    u_fix: np.ndarray        # (N,) uniform
    u_spread: np.ndarray     # (N,) uniform
    score_u: np.ndarray      # (N,) uniform
    false_pos: list[tuple[int, Box, float]]


class DegradedTruthPredictor:
    def __init__(self, truth: LabelSet, miss: float = 0.25, relabel: float = 0.1,
                 jitter: float = 0.1, false_positives: float = 0.5, fix: float = 0.9,
                 spread: float = 0.2, vary: float = 0.8, seed: int = 0,
                 model_version: str = "degraded-truth"):
        self.truth = truth.by_id()
        self.classes = truth.categories
        self.rates = dict(miss=miss, relabel=relabel, jitter=jitter,
                          false_positives=false_positives)
        self.fix, self.spread, self.vary, self.seed = fix, spread, vary, seed
        self.model_version = model_version
        self._draws: dict[str, _Draws] = {}

    def __call__(self, image_id: str, clicks: list[Click]) -> list[Annotation]:
        return self.predict(image_id, clicks)

    def predict(self, image_id: str, clicks: list[Click]) -> list[Annotation]:
        gt = self.truth[image_id]
        d = self._draws_for(image_id)
        fixed = self._fixed_by(gt.annotations, clicks, d)
        source = "click_refined" if clicks else "model"
        out = []
        for i, g in enumerate(gt.annotations):
            if fixed[i]:
                out.append(self._ann(g.category, g.box, 0.9 + 0.1 * d.score_u[i], source))
                continue
            if d.missed[i]:
                continue
            cat = g.category if d.relabel_to[i] < 0 else self.classes[d.relabel_to[i]]
            box = self._jittered(g.box, d.jitter[i], gt.image.width, gt.image.height)
            right = cat == g.category and box.iou(g.box) >= 0.5
            score = (0.55 + 0.45 * d.score_u[i]) if right else (0.3 + 0.5 * d.score_u[i])
            out.append(self._ann(cat, box, score, source))
        out += [self._ann(self.classes[c], box, s, source) for c, box, s in d.false_pos
                if not any(box.contains(k.x, k.y) for k in clicks)]
        return out

    # -- internals -----------------------------------------------------------------------------
    def _ann(self, cat: str, box: Box, score: float, source: str) -> Annotation:
        return Annotation(cat, box, provenance=Provenance(source, self.model_version,
                                                          round(float(score), 4)))

    def _fixed_by(self, objects: list[Annotation], clicks: list[Click],
                  d: _Draws) -> np.ndarray:
        fixed = np.zeros(len(objects), dtype=bool)
        per_class: dict[str, int] = {}
        for c in clicks:
            per_class[c.category] = per_class.get(c.category, 0) + 1
            hit = _clicked_object(objects, c)
            if hit is not None and d.u_fix[hit] < self.fix:
                fixed[hit] = True
        for i, g in enumerate(objects):
            n = per_class.get(g.category, 0)
            if n and d.u_spread[i] < 1 - (1 - self.spread) ** n:
                fixed[i] = True
        return fixed

    def _jittered(self, box: Box, jitter: np.ndarray, width: int, height: int) -> Box:
        x1, y1, x2, y2 = (np.array(box.xyxy()) + jitter).tolist()
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        out = Box(x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)).clip(width, height)
        return out if out.width >= 1 and out.height >= 1 else box

    def _draws_for(self, image_id: str) -> _Draws:
        if image_id in self._draws:
            return self._draws[image_id]
        rng = np.random.default_rng([self.seed, zlib.crc32(image_id.encode())])
        gt = self.truth[image_id]
        n = len(gt.annotations)
        k = 1.0 + self.vary * (2 * rng.random() - 1)
        r = {name: rate * k for name, rate in self.rates.items()}
        sizes = np.array([max(g.box.size, 1.0) for g in gt.annotations])
        relabel = rng.random(n) < r["relabel"]
        other = rng.integers(1, max(len(self.classes), 2), size=n)
        own = np.array([self.classes.index(g.category) for g in gt.annotations], dtype=int)
        relabel_to = np.where(relabel & (len(self.classes) > 1),
                              (own + other) % max(len(self.classes), 1), -1)
        fps = []
        typical = float(np.median(sizes)) if n else 12.0
        for _ in range(rng.poisson(r["false_positives"])):
            s = typical * rng.uniform(0.6, 1.5)
            x = rng.uniform(0, max(gt.image.width - s, 1))
            y = rng.uniform(0, max(gt.image.height - s, 1))
            fps.append((int(rng.integers(len(self.classes))), Box(x, y, x + s, y + s),
                        0.3 + 0.4 * rng.random()))
        d = _Draws(k, rng.random(n) < r["miss"], relabel_to,
                   rng.normal(0, 1, size=(n, 4)) * (r["jitter"] * sizes)[:, None],
                   rng.random(n), rng.random(n), rng.random(n), fps)
        self._draws[image_id] = d
        return d


def _clicked_object(objects: list[Annotation], c: Click) -> int | None:
    """The object a click points at: inside its box grown by 3 px, else the nearest centre
    within the object's size; None when the click points at nothing."""
    best, best_d = None, math.inf
    for i, g in enumerate(objects):
        b = g.box
        inside = b.x1 - 3 <= c.x <= b.x2 + 3 and b.y1 - 3 <= c.y <= b.y2 + 3
        dist = math.hypot(b.center[0] - c.x, b.center[1] - c.y)
        if (inside or dist <= max(b.size, 6.0)) and dist < best_d:
            best, best_d = i, dist
    return best
