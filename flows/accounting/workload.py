"""What correcting a batch cost: a box-level diff and the seed-002 workload, with click costs.

Diff (`diff_batch`): per image, the final labels are matched against the model's FIRST
pre-annotation. Boxes that lie mostly (>= 50 % of their area) inside an ignore region are left
out on both sides. Matching is one-to-one and class-agnostic: the Hungarian algorithm
(scipy.optimize.linear_sum_assignment) maximises the summed IoU over all pairs with IoU > 0
(a tiny bonus breaks ties in favour of same-class pairs). Which IoU is `geometry`'s
(WorkloadParams.geometry): "box" that of the axis-aligned boxes (every Annotation carries
one), "oriented" that of the oriented boxes' polygons (an annotation without an oriented box
counts as its axis-aligned box; the ignore rule then also measures polygon areas), "auto"
oriented on an image where every annotation of both sides has an oriented box, else box. An
annotator who turns an oriented box has moved it, though its axis-aligned outline may hardly
change (a square turned by 90 degrees keeps it exactly). "Same object" therefore means
"overlapping and assigned to each other". Each matched pair is exactly one of

    accepted   same class, IoU >= iou          (the annotator left it alone, or barely nudged it)
    moved      same class, 0 < IoU < iou       (the box was adjusted)
    relabeled  different class, IoU > 0        (`relabeled_moved` counts those also moved)

and every unmatched pre-annotation is `deleted`, every unmatched final box `added`.

Workload (`workload`), following the active-learning loop paper (train-annotate loop with ordered
batches):

    WB = #corrections + #objects in B1        corrections = additions An + removals Rn
    WT = B1n * T + An * T + Rn * T/2

The paper matches with an IoU threshold and knows only additions and removals, so a moved or
relabeled box is one removal plus one addition there: An = added + moved + relabeled,
Rn = deleted + moved + relabeled. Batch 1 is labeled from scratch (B1n = its object count).

`seconds` extends WT to what an annotator with clicks and box edits does, with the cost model
of `WorkloadParams` (Benenson et al. 2019's time model): every image with model boxes or clicks
costs `accept_image_seconds` to check (one the model showed nothing on is drawn as by hand, with
nothing to check; until 2026-12-02 every image was charged); each click round with k > 0
clicks costs first_click + (k - 1) * click; then edits are charged against the model output
the annotator saw last (after the clicks: `refined`; without clicks that is the
pre-annotation): added * T + deleted * T/2 + moved * move + relabeled * relabel (+ move
when also moved). Reductions are against labeling every object of
the batch by hand (#objects * T).

Click mode (simulator.missing: click, issue #30): an added box whose provenance is
`click_box` was made from a centre click, not drawn: it costs centre_click + box_verify when
kept as produced (`click_accepted`) and + move when it had to be moved (`edited`,
`click_fixed`) instead of T. Batch 1's `seconds` is its added boxes priced that way (all
drawn: #objects * T, as before). Each batch's workload says how many added boxes were
`drawn` / `click_accepted` / `click_fixed` and the seconds of each (`<kind>_seconds`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from tinyloop.annotations import Annotation, IgnoreRegion, ImageLabels, LabelSet
from tinyloop.boxes import (in_ignore_regions, iou_matrix as box_iou_matrix, polygon_iou_matrix,
                            polygons_in_ignore_regions)

CATEGORIES = ("accepted", "moved", "relabeled", "deleted", "added")
ADDED_KINDS = ("drawn", "click_accepted", "click_fixed")  # how an added box was made
GEOMETRIES = ("auto", "box", "oriented")  # WorkloadParams.geometry


@dataclass
class ImageDiff:
    image_id: str
    accepted: int = 0
    moved: int = 0
    relabeled: int = 0
    relabeled_moved: int = 0   # relabeled pairs whose IoU is also below the threshold
    deleted: int = 0
    added: int = 0
    click_accepted: int = 0    # of `added`: made from a centre click, kept as produced
    click_fixed: int = 0       # of `added`: made from a centre click, then moved
    ignored: int = 0           # boxes (either side) left out because they lie in ignore regions
    objects: int = 0           # final boxes outside ignore regions
    geometry: str = "box"      # the IoU it was matched by: "box" or "oriented"
    clicks_by_round: dict[int, int] = field(default_factory=dict)

    @property
    def additions(self) -> int:
        """An of the loop paper: every final box without a same-class match at the threshold."""
        return self.added + self.moved + self.relabeled

    @property
    def removals(self) -> int:
        """Rn of the loop paper: every pre-annotated box without such a match."""
        return self.deleted + self.moved + self.relabeled

    @property
    def drawn(self) -> int:
        """Added boxes drawn by hand (the rest of `added` came from centre clicks)."""
        return self.added - self.click_accepted - self.click_fixed

    @property
    def clicks(self) -> int:
        return sum(self.clicks_by_round.values())

    @property
    def shown(self) -> int:
        """Model boxes the annotator saw before editing (outside ignore regions)."""
        return self.accepted + self.moved + self.relabeled + self.deleted


@dataclass
class BatchDiff:
    iou: float
    images: list[ImageDiff]

    def totals(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: sum(getattr(d, k) for d in self.images)
                               for k in (*CATEGORIES, "relabeled_moved", "ignored", "objects",
                                         "click_accepted", "click_fixed")}
        out["images"] = len(self.images)
        out["oriented_images"] = sum(d.geometry == "oriented" for d in self.images)
        rounds: Counter[int] = Counter()
        for d in self.images:
            rounds.update(d.clicks_by_round)
        out["clicks_by_round"] = {r: rounds[r] for r in sorted(rounds)}
        out["clicks"] = sum(rounds.values())
        return out

    def to_json(self) -> dict[str, Any]:
        return {"iou": self.iou, "totals": _str_keys(self.totals()),
                "images": [_str_keys(asdict(d)) for d in self.images]}


# --- diff ----------------------------------------------------------------------------------

def _shape(x: Annotation | IgnoreRegion):
    """What oriented geometry measures: the oriented box, else the axis-aligned one."""
    return x.obox if x.obox is not None else x.box


def outside_ignore(anns: list[Annotation], regions: list[IgnoreRegion],
                   oriented: bool = False) -> list[Annotation]:
    """The annotations that do not lie in an ignore region (tinyloop.boxes' rule: half
    their area or more inside one region; `oriented`: areas of the oriented boxes)."""
    if not anns or not regions:
        return list(anns)
    if oriented:
        inside = polygons_in_ignore_regions([_shape(a) for a in anns],
                                            [_shape(r) for r in regions])
    else:
        inside = in_ignore_regions([a.box.xyxy() for a in anns],
                                   [r.box.xyxy() for r in regions])
    return [a for a, ignored in zip(anns, inside) if not ignored]


def iou_matrix(a: list[Annotation], b: list[Annotation], oriented: bool = False) -> np.ndarray:
    """(len(a), len(b)) IoU of the axis-aligned boxes (`oriented`: of the oriented boxes'
    polygons)."""
    if oriented:
        return polygon_iou_matrix([_shape(x) for x in a], [_shape(x) for x in b])
    return box_iou_matrix([x.box.xyxy() for x in a], [x.box.xyxy() for x in b])


def uses_oriented(pre: list[Annotation], final: list[Annotation], geometry: str) -> bool:
    """Does `geometry` ("auto" | "box" | "oriented") match this image by oriented boxes?
    auto: only when every annotation of both sides has one (a detector without oriented
    boxes is judged by the boxes it drew)."""
    if geometry not in GEOMETRIES:
        raise ValueError(f"unknown workload geometry {geometry!r}; expected one of "
                         f"{', '.join(GEOMETRIES)} (fix workload.geometry in params.yaml)")
    if geometry == "auto":
        return all(a.obox is not None for a in [*pre, *final])
    return geometry == "oriented"


def match(pre: list[Annotation], final: list[Annotation],
          oriented: bool = False) -> list[tuple[int, int, float]]:
    """One-to-one class-agnostic matching maximising IoU (`oriented`: polygon IoU); pairs
    (i_pre, j_final, iou > 0)."""
    from scipy.optimize import linear_sum_assignment
    ious = iou_matrix(pre, final, oriented)
    if ious.size == 0:
        return []
    same = np.array([[p.category == f.category for f in final] for p in pre], dtype=float)
    score = np.where(ious > 0, ious + 1e-6 * same, 0.0)
    rows, cols = linear_sum_assignment(score, maximize=True)
    return [(int(i), int(j), float(ious[i, j])) for i, j in zip(rows, cols) if ious[i, j] > 0]


def diff_image(pre: list[Annotation], final: ImageLabels, iou: float,
               ignore: list[IgnoreRegion] | None = None, geometry: str = "auto") -> ImageDiff:
    """One image's diff; `geometry` as WorkloadParams.geometry (module doc)."""
    regions = list(final.ignore) + list(ignore or [])
    oriented = uses_oriented(pre, final.annotations, geometry)
    pre_kept = outside_ignore(pre, regions, oriented)
    fin_kept = outside_ignore(final.annotations, regions, oriented)
    d = ImageDiff(final.id, objects=len(fin_kept),
                  ignored=len(pre) - len(pre_kept) + len(final.annotations) - len(fin_kept),
                  geometry="oriented" if oriented else "box")
    pairs = match(pre_kept, fin_kept, oriented)
    for i, j, overlap in pairs:
        if pre_kept[i].category != fin_kept[j].category:
            d.relabeled += 1
            d.relabeled_moved += overlap < iou
        elif overlap >= iou:
            d.accepted += 1
        else:
            d.moved += 1
    d.deleted = len(pre_kept) - len(pairs)
    d.added = len(fin_kept) - len(pairs)
    d.click_accepted, d.click_fixed = click_made(fin_kept, {j for _, j, _ in pairs})
    rounds = Counter(c.round for c in final.clicks)
    d.clicks_by_round = {r: rounds[r] for r in sorted(rounds)}
    return d


def click_made(final: list[Annotation], matched: set[int]) -> tuple[int, int]:
    """(kept as produced, moved) among the unmatched final boxes that a centre click made
    (provenance `click_box`, `edited` once the annotator moved it; simulator.missing)."""
    made = [a.provenance.edited for j, a in enumerate(final)
            if j not in matched and a.provenance.source == "click_box"]
    return made.count(False), made.count(True)


def diff_batch(preannotations: LabelSet, final: LabelSet, iou: float = 0.5,
               geometry: str = "auto") -> BatchDiff:
    """Diff every image of `final` against its pre-annotation (none: everything is added),
    matched by `geometry`'s IoU (WorkloadParams.geometry: auto | box | oriented)."""
    pre = preannotations.by_id()
    out = []
    for item in final:
        before = pre.get(item.id)
        out.append(diff_image(before.annotations if before else [], item, iou,
                              before.ignore if before else None, geometry))
    return BatchDiff(iou, out)


# --- workload ------------------------------------------------------------------------------

def click_seconds(clicks_by_round: dict[int, int], cost) -> float:
    """Seed 004: a round's first click ~8 s, each further click ~3 s."""
    return sum(cost.first_click_seconds + (k - 1) * cost.click_seconds
               for k in clicks_by_round.values() if k > 0)


def added_seconds(d: ImageDiff, cost) -> dict[str, float]:
    """Seconds of the added boxes by how they were made: drawn (T each), centre-clicked and
    kept (click + verification) or centre-clicked and moved (+ move)."""
    clicked = cost.centre_click_seconds + cost.box_verify_seconds
    return {"drawn": d.drawn * cost.box_seconds,
            "click_accepted": d.click_accepted * clicked,
            "click_fixed": d.click_fixed * (clicked + cost.move_seconds)}


def edit_seconds(d: ImageDiff, cost) -> float:
    T = cost.box_seconds
    return (sum(added_seconds(d, cost).values()) + d.deleted * cost.removal_fraction * T
            + d.moved * cost.move_seconds + d.relabeled * cost.relabel_seconds
            + d.relabeled_moved * cost.move_seconds)


def made_by(images: list[ImageDiff], cost) -> dict[str, float]:
    """How many added boxes were drawn, clicked-and-accepted and clicked-and-fixed, and the
    seconds each cost (`<kind>` and `<kind>_seconds`)."""
    out: dict[str, float] = {}
    for kind in ADDED_KINDS:
        out[kind] = sum(getattr(d, kind) for d in images)
        out[f"{kind}_seconds"] = sum(added_seconds(d, cost)[kind] for d in images)
    return out


def workload(diff: BatchDiff, cost, first_batch: bool,
             refined: BatchDiff | None = None) -> dict[str, Any]:
    """WB, WT (the loop paper), `seconds` (with clicks and edits) and % reductions vs manual.

    `cost` is a `flows.project.config.WorkloadParams`. `refined` is the diff of the final labels
    against the model's last output after clicks; without it edits are charged against
    the first pre-annotation.
    """
    t = diff.totals()
    T = cost.box_seconds
    objects = t["objects"]
    manual_seconds = objects * T
    edits_from = refined.images if refined is not None else diff.images
    if first_batch:  # every box added: drawn, or centre-clicked in click mode
        an, rn, wb, wt = objects, 0, objects, objects * T
        seconds = sum(edit_seconds(d, cost) for d in diff.images)
    else:
        an = sum(d.additions for d in diff.images)
        rn = sum(d.removals for d in diff.images)
        wb = an + rn
        wt = an * T + rn * cost.removal_fraction * T
        # an image the model showed nothing on and nobody clicked is drawn as by hand
        seconds = (sum(cost.accept_image_seconds for d in diff.images if d.shown or d.clicks)
                   + sum(click_seconds(d.clicks_by_round, cost) for d in diff.images)
                   + sum(edit_seconds(d, cost) for d in edits_from))
    made = made_by(edits_from, cost)
    drawn_instead = if_drawn(seconds, made, cost)
    return {
        "iou": diff.iou, "first_batch": first_batch, "images": t["images"],
        "oriented_images": t["oriented_images"],   # matched by polygon IoU (geometry)
        "objects": objects, "diff": {k: t[k] for k in (*CATEGORIES, "relabeled_moved",
                                                          "ignored")},
        "clicks": t["clicks"], "clicks_by_round": _str_keys(t["clicks_by_round"]),
        "additions": an, "removals": rn, "WB": wb, "WT": wt, "seconds": seconds,
        "manual_boxes": objects, "manual_seconds": manual_seconds,
        **made, "seconds_if_drawn": drawn_instead,
        **reductions({"WB": wb, "WT": wt, "seconds": seconds, "objects": objects,
                      "manual_seconds": manual_seconds,
                      "seconds_if_drawn": drawn_instead}),
    }


def if_drawn(seconds: float, made: dict[str, float], cost) -> float:
    """The batch's seconds had its centre-clicked boxes been drawn instead (simulator.missing
    draw): the same annotation otherwise, so one click-mode run prices both modes."""
    clicked = made["click_accepted"] + made["click_fixed"]
    return (seconds - made["click_accepted_seconds"] - made["click_fixed_seconds"]
            + clicked * cost.box_seconds)


SUMMED = ("images", "objects", "clicks", "additions", "removals", "WB", "WT", "seconds",
          "manual_boxes", "manual_seconds", "seconds_if_drawn",
          *ADDED_KINDS, *(f"{k}_seconds" for k in ADDED_KINDS))
REDUCTIONS = {  # % saved against labeling every object by hand: (spent, by hand)
    "reduction_WB_pct": ("WB", "objects"),
    "reduction_WT_pct": ("WT", "manual_seconds"),
    "reduction_seconds_pct": ("seconds", "manual_seconds"),
    "reduction_seconds_if_drawn_pct": ("seconds_if_drawn", "manual_seconds"),
}


def reduction_pct(part: float, whole: float) -> float | None:
    """% of `whole` saved when `part` was spent instead (None when whole is 0)."""
    return None if not whole else round(100.0 * (1.0 - part / whole), 2)


def reductions(totals: dict[str, Any]) -> dict[str, float | None]:
    """The REDUCTIONS that `totals` (one batch's or summed workload numbers) hold both
    numbers of."""
    return {k: reduction_pct(totals[part], totals[whole])
            for k, (part, whole) in REDUCTIONS.items() if part in totals and whole in totals}


def cumulative(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum per-batch workloads (batch 1 first) and recompute the reductions: the one
    cumulative rule of the report, the sweep's Table 1 and `tinyloop workload`. Sums the
    SUMMED numbers every batch holds (an entry at another IoU may hold only some)."""
    out: dict[str, Any] = {k: sum(b[k] for b in batches) for k in SUMMED
                           if all(k in b for b in batches)}
    out["batches"] = len(batches)
    out.update(reductions(out))
    return out


def batch_workload(preannotations: LabelSet | None, final: LabelSet, cost,
                   first_batch: bool, refined: LabelSet | None = None) -> dict[str, Any]:
    """Everything workload.json holds for one batch: diff + workload at each reported IoU."""
    pre = preannotations if preannotations is not None else LabelSet(final.categories)
    out: dict[str, Any] = {"iou": cost.iou}
    for thr in dict.fromkeys([cost.iou, *cost.report_ious]):
        d = diff_batch(pre, final, thr, cost.geometry)
        r = diff_batch(refined, final, thr, cost.geometry) if refined is not None else None
        entry = workload(d, cost, first_batch, r)
        entry["per_image"] = d.to_json()["images"]
        out[f"iou_{thr:g}"] = entry
    out.update({k: v for k, v in out[f"iou_{cost.iou:g}"].items() if k != "per_image"})
    return out


def confident(annotations: list[Annotation], min_score: float) -> list[Annotation]:
    """The model boxes worth showing: score >= min_score (unscored boxes stay)."""
    return [a for a in annotations
            if a.provenance.score is None or a.provenance.score >= min_score]


def wt_by_threshold(predictions: LabelSet, truth: LabelSet, cost,
                    thresholds: list[float]) -> list[dict[str, float]]:
    """What showing only predictions scoring >= t would have saved, per t: the WT reduction %
    (at cost.iou) and the time reduction % (`seconds`: WT's edits at their own prices plus
    checking every image that shows a box; no clicks).

    `predictions` and `truth` cover the same images (a held-out split): this is what each
    `flows.min_score` would have saved an annotator there."""
    rows = []
    for t in thresholds:
        shown = LabelSet(predictions.categories, [
            replace(im, annotations=confident(im.annotations, t))
            for im in predictions.images], predictions.info)
        w = workload(diff_batch(shown, truth, cost.iou, cost.geometry), cost,
                     first_batch=False)
        rows.append({"min_score": t, "wt_reduction_pct": w["reduction_WT_pct"],
                     "seconds_reduction_pct": w["reduction_seconds_pct"]})
    return rows


NONE_SHOWN = 1.01  # a min_score above every score: the model's boxes are not shown


def best_threshold(curve: list[dict[str, float]], min_gain_pct: float = 0.0,
                   track: list[dict[str, float]] | None = None) -> float:
    """The min_score whose boxes save the most by BOTH measures (the larger min(WT
    reduction, time reduction); the highest such score on ties: fewer boxes to look at);
    NONE_SHOWN when even that saves less than `min_gain_pct` %: a model that would not
    clearly save time is not shown (annotators draw the batch by hand).

    `track` (the previous model's rows on the batch annotators just corrected) vetoes the
    scores from which boxes cost time there: the held-out split can differ from the batches
    an ordering picks (dissimilar batches are unlike a random val split).

    Both, because each misses a cost: WT prices no image check (a model with a few right
    boxes per image can pass on WT and still slow people down), and `seconds` prices a moved
    box at a few seconds where the loop paper's WT counts it as redrawn, so it favours low
    thresholds whose many roughly-right boxes a held-out split of a dozen images overrates."""
    if track is not None:
        lost = {r["min_score"] for r in track if saving(r) < 0.0}
        curve = [r for r in curve if r["min_score"] not in lost]
    if not curve:
        return NONE_SHOWN
    best = max(curve, key=lambda r: (saving(r), r["min_score"]))
    return best["min_score"] if saving(best) >= min_gain_pct else NONE_SHOWN


def saving(row: dict[str, float]) -> float:
    """One wt_by_threshold row's saving by BOTH measures: min(WT, time reduction) %."""
    return min(row["wt_reduction_pct"] or 0.0, row["seconds_reduction_pct"] or 0.0)


def _str_keys(d: dict) -> dict:
    return {str(k) if isinstance(k, int) else k: (_str_keys(v) if isinstance(v, dict) else v)
            for k, v in d.items()}
