"""A box from a centre click and the image alone: where no detector exists yet (batch 1, a
class the model has never seen), the click still has to become most of a box (issue #30).

c3det.click_to_box turns a click into a box from the detector's candidates; this module does
it from the pixels around the click, in numpy/scipy (no torch, no model):

1. Candidates (`candidate_boxes`). In a window around the click (`window_scale` times the
   class's typical size, clamped to [`window_min`, `window_max`] px) the background level is
   the window's median. For each polarity - brighter than the background (a warm body in a
   thermal image), darker, either - the strongest pixel within `seek_px` of the click is the
   object's core; the connected region around it above `level` x that pixel's contrast, for
   each of `levels`, gives one box. The class's typical size centred on the click, at each of
   `prior_scales`, gives the rest (the fallback where the image has no contrast at all).
2. Ranking. Each candidate is described by a few cheap numbers (size against the class's
   typical size, distance of its centre from the click, how much it stands out from a ring
   around it, polarity, level, fill). Until `ranker_min_boxes` boxes of this dataset are
   known, the hand score ranks them, the box-centre score of Papadopoulos et al. (seeds/001)
   times a box-size score times the ring contrast:
        exp(-d^2 / (2 centre_sigma^2)) * exp(-log(area / prior area)^2 / (2 size_sigma^2))
            * max(contrast, 0)        (d in units of the typical size)
   From then on a class-agnostic ranker learned from the boxes labelled so far
   (`BoxRanker`: gradient-boosted trees predicting each candidate's IoU with the true box,
   from synthetic centre clicks on those boxes) picks the candidate.

The typical size of a class (`SizePrior`) is the median width and height of its boxes so far;
a class with none yet uses the median of every class, else a `default_size` square.

Measured on HIT-UAV val (benchmarks/click_mode.py, docs/benchmarks/click_mode.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

POLARITIES = ("bright", "dark", "abs")
KINDS = (*POLARITIES, "prior")


@dataclass
class ClickBoxParams:
    """Knobs of the image-based click-to-box (params.yaml: annotate.click_box)."""
    window_scale: float = 1.5    # search window half-side = this x the typical size's long side
    window_min: int = 16         # px, half-side clamp: a tiny prior still sees its surroundings
    window_max: int = 48         # px, half-side clamp: per-click cost stays ~1 ms
    seek_px: int = 3             # the object's core is searched this far from the click
                                 # (the simulator's click noise: 3 px, Benenson et al. 2019)
    levels: list[float] = field(default_factory=lambda: [0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    prior_scales: list[float] = field(default_factory=lambda: [0.7, 1.0, 1.4])
    default_size: float = 16.0   # px, square for a class and dataset with no box yet
    centre_sigma: float = 0.3    # hand score: centre distance, in typical sizes
    size_sigma: float = 0.5      # hand score: log-area spread around the typical area
    ranker_min_boxes: int = 100  # below this many known boxes the hand score ranks (the
                                 # learned ranker beat it from ~100 boxes on HIT-UAV)
    ranker_max_boxes: int = 3000  # learn from at most the latest this many boxes (cost)
    ranker_clicks_per_box: int = 2  # synthetic centre clicks per known box
    ranker_click_sigma: float = 2.5  # px, their noise (the ranker must not learn the
                                     # simulator's exact noise model, seeds/004)
    seed: int = 0

    def check(self) -> str | None:
        if not 0 < self.window_min <= self.window_max:
            return "click_box needs 0 < window_min <= window_max"
        if self.window_scale <= 0 or self.default_size <= 0 or self.seek_px < 0:
            return "click_box window_scale and default_size must be > 0, seek_px >= 0"
        if not self.levels or not all(0 < v < 1 for v in self.levels):
            return "click_box levels must be a non-empty list of fractions in (0, 1)"
        if not self.prior_scales or min(self.prior_scales) <= 0:
            return "click_box prior_scales must be a non-empty list of factors > 0"
        if min(self.centre_sigma, self.size_sigma) <= 0:
            return "click_box centre_sigma and size_sigma must be > 0"
        if self.ranker_min_boxes < 1 or self.ranker_max_boxes < self.ranker_min_boxes:
            return "click_box needs 1 <= ranker_min_boxes <= ranker_max_boxes"
        if self.ranker_clicks_per_box < 1 or self.ranker_click_sigma < 0:
            return "click_box ranker_clicks_per_box >= 1 and ranker_click_sigma >= 0"
        return None


# --- candidates -------------------------------------------------------------------------------

@dataclass
class Candidates:
    boxes: np.ndarray      # (M, 4) x1 y1 x2 y2, image px
    features: np.ndarray   # (M, F), see FEATURES


FEATURES = ("log_w", "log_h", "log_area", "dx", "dy", "dist", *(f"is_{k}" for k in KINDS),
            "level", "fill", "contrast", "inside", "ring", "peak", "log_size", "log_prior_aspect",
            "log_aspect")


def _window(gray: np.ndarray, x: float, y: float, half: int):
    h, w = gray.shape
    x0, y0 = min(max(int(x) - half, 0), w - 1), min(max(int(y) - half, 0), h - 1)
    x1, y1 = max(min(int(x) + half + 1, w), x0 + 1), max(min(int(y) + half + 1, h), y0 + 1)
    return gray[y0:y1, x0:x1].astype(np.float32), x0, y0


def _core(dev: np.ndarray, cx: float, cy: float, seek: int) -> tuple[int, int, float]:
    """(row, col, contrast) of the strongest pixel of `dev` within `seek` px of (cx, cy)."""
    h, w = dev.shape
    r0, c0 = min(max(int(cy) - seek, 0), h - 1), min(max(int(cx) - seek, 0), w - 1)
    near = dev[r0:max(int(cy) + seek + 1, r0 + 1), c0:max(int(cx) + seek + 1, c0 + 1)]
    r, c = np.unravel_index(np.argmax(near), near.shape)
    return r0 + int(r), c0 + int(c), float(near[r, c])


def _region_boxes(dev: np.ndarray, kind: str, levels: list[float], seek: int,
                  cx: float, cy: float) -> list[tuple]:
    """One box per level: the connected region above level x core contrast around the core."""
    r, c, peak = _core(dev, cx, cy, seek)
    if peak <= 0:
        return []
    out = []
    for level in levels:
        regions, _ = ndimage.label(dev >= level * peak)
        region = regions == regions[r, c]
        rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
        box = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        out.append((box, kind, level, int(region.sum()), peak))
    return out


def candidate_boxes(gray: np.ndarray, x: float, y: float, prior_wh: tuple[float, float],
                    p: ClickBoxParams) -> Candidates:
    """Every candidate box for a click at (x, y) on a (H, W) image, with its features."""
    pw, ph = prior_wh
    half = int(np.clip(p.window_scale * max(pw, ph), p.window_min, p.window_max))
    win, x0, y0 = _window(gray, x, y, half)
    cx, cy = x - x0, y - y0
    background = float(np.median(win))
    deviation = {"bright": win - background, "dark": background - win,
                 "abs": np.abs(win - background)}
    found = [cand for kind in POLARITIES
             for cand in _region_boxes(deviation[kind], kind, p.levels, p.seek_px, cx, cy)]
    found += [((cx - pw * s / 2, cy - ph * s / 2, cx + pw * s / 2, cy + ph * s / 2),
               "prior", s, 0, 0.0) for s in p.prior_scales]
    boxes = np.array([b for b, *_ in found], dtype=np.float64)
    feats = _features(found, boxes, deviation["abs"], cx, cy, prior_wh)
    return Candidates(boxes + [x0, y0, x0, y0], feats)


def _ring_means(absdev: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean |deviation| inside each box and in a ring around it (30 % of its long side,
    >= 2 px), from one integral image."""
    h, w = absdev.shape
    integral = np.pad(absdev.cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def box_sum(b):
        x1, y1 = np.clip(b[:, 0], 0, w), np.clip(b[:, 1], 0, h)
        x2, y2 = np.clip(b[:, 2], 0, w), np.clip(b[:, 3], 0, h)
        area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
        s = integral[y2, x2] - integral[y1, x2] - integral[y2, x1] + integral[y1, x1]
        return s, area
    inner = np.round(boxes).astype(int)
    margin = np.maximum(2, (0.3 * np.maximum(inner[:, 2] - inner[:, 0],
                                             inner[:, 3] - inner[:, 1])).astype(int))
    outer = inner + np.stack([-margin, -margin, margin, margin], 1)
    s_in, a_in = box_sum(inner)
    s_out, a_out = box_sum(outer)
    inside = s_in / np.maximum(a_in, 1)
    ring = np.where(a_out > a_in, (s_out - s_in) / np.maximum(a_out - a_in, 1), inside)
    return inside, ring


def _features(found: list[tuple], boxes: np.ndarray, absdev: np.ndarray, cx: float,
              cy: float, prior_wh: tuple[float, float]) -> np.ndarray:
    pw, ph = prior_wh
    size = np.sqrt(pw * ph)
    w = np.maximum(boxes[:, 2] - boxes[:, 0], 1e-3)
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 1e-3)
    dx = ((boxes[:, 0] + boxes[:, 2]) / 2 - cx) / size
    dy = ((boxes[:, 1] + boxes[:, 3]) / 2 - cy) / size
    spread = float(absdev.std()) + 1e-6   # contrasts in units of the window's spread
    inside, ring = _ring_means(absdev, boxes)
    kinds = np.array([[kind == k for k in KINDS] for _, kind, *_ in found], dtype=np.float64)
    level = np.array([lv for _, _, lv, _, _ in found])
    fill = np.array([n for *_, n, _ in found]) / (w * h)
    peak = np.array([pk for *_, pk in found]) / spread
    return np.column_stack([
        np.log(w / pw), np.log(h / ph), np.log(w * h / (pw * ph)), dx, dy, np.hypot(dx, dy),
        kinds, level, fill, (inside - ring) / spread, inside / spread, ring / spread, peak,
        np.full(len(w), np.log(size)), np.full(len(w), np.log(pw / ph)), np.log(w / h)])


def hand_score(features: np.ndarray, p: ClickBoxParams) -> np.ndarray:
    """Centre score x size score x ring contrast (module doc, step 2)."""
    col = {name: features[:, i] for i, name in enumerate(FEATURES)}
    return (np.exp(-col["dist"] ** 2 / (2 * p.centre_sigma ** 2))
            * np.exp(-col["log_area"] ** 2 / (2 * p.size_sigma ** 2))
            * (np.maximum(col["contrast"], 0.0) + 1e-6))  # no contrast: the typical size


# --- what is learned from the boxes so far ------------------------------------------------------

class SizePrior:
    """Median width and height of each class's boxes so far."""

    def __init__(self, default_size: float):
        self.default_size = default_size
        self.sizes: dict[str, list[tuple[float, float]]] = {}

    def add(self, category: str, w: float, h: float) -> None:
        self.sizes.setdefault(category, []).append((w, h))

    def of(self, category: str) -> tuple[float, float]:
        seen = self.sizes.get(category) or [wh for v in self.sizes.values() for wh in v]
        if not seen:
            return self.default_size, self.default_size
        w, h = np.median(np.array(seen), axis=0)
        return float(w), float(h)


def gray_image(path) -> np.ndarray:
    """(H, W) float32 grayscale in [0, 1] of an image file (tinyloop.images' pixel format)."""
    from tinyloop.images import load_image
    return load_image(path).mean(0)


def iou_with(boxes: np.ndarray, box) -> np.ndarray:
    """(M,) IoU of each row of `boxes` with one box (x1, y1, x2, y2)."""
    iw = np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0])
    ih = np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1])
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + (box[2] - box[0]) * (box[3] - box[1]) - inter, 1e-9)


class BoxRanker:
    """Predicts a candidate's IoU with the true box from its features, learned from synthetic
    centre clicks on the boxes labelled so far (class-agnostic: the class enters only through
    its typical size). Refitted when the known boxes have grown by half since the last fit."""

    def __init__(self, p: ClickBoxParams):
        self.p = p
        self.rng = np.random.default_rng(p.seed)
        self.rows: list[tuple[np.ndarray, np.ndarray]] = []   # per box: features, IoUs
        self.model = None
        self.fitted_on = 0

    def add(self, gray: np.ndarray, box, prior_wh: tuple[float, float]) -> None:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        for _ in range(self.p.ranker_clicks_per_box):
            dx, dy = self.rng.normal(0.0, self.p.ranker_click_sigma, 2)
            c = candidate_boxes(gray, cx + dx, cy + dy, prior_wh, self.p)
            self.rows.append((c.features, iou_with(c.boxes, box)))
        self.rows = self.rows[-self.p.ranker_max_boxes * self.p.ranker_clicks_per_box:]

    @property
    def boxes_known(self) -> int:
        return len(self.rows) // self.p.ranker_clicks_per_box

    def ready(self) -> bool:
        """Fitted (refitted first when the known boxes grew by half) and allowed to rank."""
        n = self.boxes_known
        if n >= self.p.ranker_min_boxes and (self.model is None or n >= 1.5 * self.fitted_on):
            self._fit()
        return self.model is not None

    def _fit(self) -> None:
        from sklearn.ensemble import HistGradientBoostingRegressor
        x = np.concatenate([f for f, _ in self.rows])
        y = np.concatenate([t for _, t in self.rows])
        self.model = HistGradientBoostingRegressor(max_iter=100, random_state=0).fit(x, y)
        self.fitted_on = self.boxes_known

    def score(self, features: np.ndarray) -> np.ndarray:
        return self.model.predict(features)


class ImageClickBoxer:
    """Click -> box from the image, learning size priors and the ranker as boxes are labelled.

    `box(gray, x, y, category)` is the box for a centre click; `learn(gray, category, box)`
    tells it a labelled box (drawn, accepted or fixed) so later clicks are ranked better."""

    def __init__(self, p: ClickBoxParams | None = None):
        self.p = p or ClickBoxParams()
        self.prior = SizePrior(self.p.default_size)
        self.ranker = BoxRanker(self.p)

    def box(self, gray: np.ndarray, x: float, y: float, category: str) -> tuple[float, ...]:
        c = candidate_boxes(gray, x, y, self.prior.of(category), self.p)
        score = (self.ranker.score(c.features) if self.ranker.ready()
                 else hand_score(c.features, self.p))
        h, w = gray.shape
        x1, y1, x2, y2 = c.boxes[int(np.argmax(score))]
        return (max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h)))

    def learn(self, gray: np.ndarray, category: str, box) -> None:
        self.ranker.add(gray, box, self.prior.of(category))
        self.prior.add(category, box[2] - box[0], box[3] - box[1])
