"""A simulated annotator that corrects a batch through the same `AnnotationStore` as a person.

For each image, in rounds (seed 004: 3 rounds x 3 clicks beat 9 clicks at once):

1. compare the current boxes with the ground truth and list the *errors* a person would click:
   ground-truth objects with no same-class box at IoU >= `error_iou` - missed objects and
   misclassified ones - largest first, skipping objects smaller than `min_error_size` (people
   overlook tiny errors) and objects already clicked;
2. click the first `clicks_per_round` of them at the box centre plus isotropic Gaussian noise
   (`click_sigma` px, seeded per image so results do not depend on image order), with the
   object's class, through `store.add_click`;
3. re-run the detector with every click so far, `predict(image_id, clicks)`, and refresh the
   store's untouched model boxes with its output (`refresh_predictions`).

A round with nothing left to click ends the image early; with `stop_unpaid_clicks` so does
a round whose clicks cost more (seed 004's click times) than the box edits they saved, and
after `give_up_after_unpaid` such images in a row the rest of the batch gets no clicks.
Finally (`correct=True`) the labels are edited to equal the ground truth exactly: overlapping
boxes are matched one-to-one (Hungarian on IoU, as in flows.workload) and moved/relabeled to
the true box, unmatched boxes deleted and missing objects drawn, all with one
`store.set_annotations`.

Every round is logged (`ImageLog`) with the process signals the quality ranker
(flows/ranker.py) learns from, plus the true remaining error after the last round
(ground-truth side, never a ranker input).
"""
from __future__ import annotations

import json
import math
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from flows.annotation_store import AnnotationStore, refresh_predictions
from flows.config import WorkloadParams
from flows.workload import click_seconds, diff_image, edit_seconds, in_ignore, match
from tinyloop.annotations import Annotation, Click, ImageLabels, LabelSet, Provenance
from tinyloop.atomic import write_json_atomic

Predict = Callable[[str, list[Click]], list[Annotation]]
SIMULATED = Provenance("simulated")


@dataclass
class RoundLog:
    round: int
    clicks: int                 # clicks made in this round
    boxes: int                  # model boxes after the round's re-prediction
    mean_score: float           # their mean score (0 when none or unscored)
    change: float               # 1 - mean best IoU between the boxes before and after
    click_dist_mean: float      # px from each click to the nearest box shown before it
    click_dist_max: float
    errors_seen: int            # errors the annotator saw at the start of the round


@dataclass
class ImageLog:
    image_id: str
    rounds: list[RoundLog] = field(default_factory=list)
    gt_objects: int = 0
    remaining_error: int = 0    # edits still needed after the last round (ground truth side)
    start_error: int = 0        # edits needed on the first pre-annotation
    start_boxes: int = 0        # model boxes shown before any click
    start_mean_score: float = 0.0
    unpaid: bool = False        # a round's clicks saved less time than they cost


# --- errors ---------------------------------------------------------------------------------

def find_errors(boxes: list[Annotation], truth: ImageLabels, error_iou: float,
                min_size: float = 0.0) -> list[Annotation]:
    """Ground-truth objects with no same-class box at IoU >= error_iou, largest first."""
    objects = [g for g in truth.annotations if not in_ignore(g, truth.ignore)]
    wrong = [g for g in objects
             if not any(b.category == g.category and b.box.iou(g.box) >= error_iou
                        for b in boxes) and g.box.size >= min_size]
    return sorted(wrong, key=lambda g: -g.box.area)


def edits_needed(boxes: list[Annotation], truth: ImageLabels, iou: float = 0.5) -> int:
    """How many box edits turn `boxes` into the ground truth (diff categories but accepted)."""
    objects = [g for g in truth.annotations if not in_ignore(g, truth.ignore)]
    shown = [b for b in boxes if not in_ignore(b, truth.ignore)]
    pairs = match(shown, objects)
    ok = sum(1 for i, j, o in pairs
             if shown[i].category == objects[j].category and o >= iou)
    return len(shown) + len(objects) - len(pairs) - ok


# --- one image ------------------------------------------------------------------------------

def image_rng(seed: int, image_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(image_id.encode())])


def noisy_click(target: Annotation, round_no: int, params, rng: np.random.Generator,
                width: int, height: int) -> Click:
    cx, cy = target.box.center
    if params.noise == "gaussian" and params.click_sigma > 0:
        dx, dy = rng.normal(0.0, params.click_sigma, size=2)
        cx, cy = cx + dx, cy + dy
    return Click(float(min(max(cx, 0.0), width)), float(min(max(cy, 0.0), height)),
                 target.category, round_no, "simulated")


def distance_to_boxes(x: float, y: float, boxes: list[Annotation], diagonal: float) -> float:
    """Distance from a point to the nearest box (0 inside one); the image diagonal if none."""
    best = diagonal
    for b in boxes:
        dx = max(b.box.x1 - x, 0.0, x - b.box.x2)
        dy = max(b.box.y1 - y, 0.0, y - b.box.y2)
        best = min(best, math.hypot(dx, dy))
    return best


def prediction_change(before: list[Annotation], after: list[Annotation]) -> float:
    """1 - mean over all boxes (both sides) of their best IoU on the other side."""
    if not before and not after:
        return 0.0
    best = [max((a.box.iou(b.box) for b in after), default=0.0) for a in before]
    best += [max((b.box.iou(a.box) for a in before), default=0.0) for b in after]
    return 1.0 - float(np.mean(best))


def mean_score(boxes: list[Annotation]) -> float:
    scores = [a.score for a in boxes if a.score is not None]
    return float(np.mean(scores)) if scores else 0.0


def model_boxes(anns: list[Annotation]) -> list[Annotation]:
    return [a for a in anns if a.provenance.source in ("model", "click_refined")]


def edits_seconds(boxes: list[Annotation], truth: ImageLabels, cost) -> float:
    """Seconds of box edits that would turn `boxes` into the ground truth."""
    return edit_seconds(diff_image(boxes, truth, cost.iou), cost)


def clicks_paid(before: list[Annotation], after: list[Annotation], n_clicks: int,
                truth: ImageLabels, cost) -> bool:
    """Did a round of `n_clicks` save at least the seconds it cost?"""
    saved = edits_seconds(before, truth, cost) - edits_seconds(after, truth, cost)
    return saved >= click_seconds({0: n_clicks}, cost)


def simulate_image(store: AnnotationStore, truth: ImageLabels, predict: Predict,
                   params, cost=None) -> ImageLog:
    """Click, re-predict and (optionally) correct one image; see the module docstring.
    `cost` (flows.config.WorkloadParams) prices clicks and edits for `stop_unpaid_clicks`."""
    rng = image_rng(params.seed, truth.id)
    item = store.get_labels(truth.id)
    w, h = item.image.width, item.image.height
    current = item.annotations
    history = [(0, model_boxes(current))]
    clicked: list[Annotation] = []
    clicks = list(item.clicks)
    seen, unpaid = [], False
    for r in range(1, params.rounds + 1):
        errors = [g for g in find_errors(current, truth, params.error_iou,
                                         params.min_error_size) if g not in clicked]
        targets = errors[:params.clicks_per_round]
        if not targets:
            break
        new = [noisy_click(g, r, params, rng, w, h) for g in targets]
        for c in new:
            store.add_click(truth.id, c)
        clicks += new
        clicked += targets
        before = current
        current = refresh_predictions(store, truth.id, predict(truth.id, list(clicks)))
        history.append((r, model_boxes(current)))
        seen.append(len(errors))
        unpaid = params.stop_unpaid_clicks and not clicks_paid(before, current, len(new),
                                                               truth, cost or WorkloadParams())
        if unpaid:
            break
    log = log_from_history(truth.id, w, h, clicks, history)
    log.unpaid = unpaid
    for round_log, n in zip(log.rounds, seen):
        round_log.errors_seen = n
    log.gt_objects = sum(not in_ignore(g, truth.ignore) for g in truth.annotations)
    log.start_error = edits_needed(history[0][1], truth)
    log.remaining_error = edits_needed(current, truth)
    if params.correct:
        store.set_annotations(truth.id, corrected(current, truth))
    return log


def log_from_history(image_id: str, width: int, height: int, clicks: list[Click],
                     history: list[tuple[int, list[Annotation]]]) -> ImageLog:
    """The process log of one image from its clicks and the model outputs it showed.

    `history`: (round, model boxes) in time order, round 0 = the first pre-annotation; an
    output made after round r's clicks carries r. The simulator and a FileStore batch
    corrected by people (`FileStore.process_log`) both go through here, so the ranker sees
    the same features either way. Ground-truth fields stay 0.
    """
    diagonal = math.hypot(width, height)
    first = history[0][1] if history else []
    log = ImageLog(image_id, start_boxes=len(first), start_mean_score=mean_score(first))
    for r in sorted({c.round for c in clicks}):
        new = [c for c in clicks if c.round == r]
        shown = ([boxes for rr, boxes in history if rr < r] or [first])[-1]
        after = ([boxes for rr, boxes in history if rr == r] or [shown])[-1]
        dists = [distance_to_boxes(c.x, c.y, shown, diagonal) for c in new]
        log.rounds.append(RoundLog(r, len(new), len(after), mean_score(after),
                                   prediction_change(shown, after), float(np.mean(dists)),
                                   float(np.max(dists)), 0))
    return log


def corrected(current: list[Annotation], truth: ImageLabels) -> list[Annotation]:
    """The ground truth, reusing the ids of the boxes it was edited from (moves, relabels)."""
    pairs = match(current, truth.annotations)
    out = []
    taken = set()
    for i, j, _ in pairs:
        g, b = truth.annotations[j], current[i]
        taken.add(j)
        if b.box == g.box and b.category == g.category and b.obox == g.obox:
            out.append(b)
        else:
            out.append(replace(b, category=g.category, box=g.box, obox=g.obox,
                               difficult=g.difficult))
    out += [replace(g, provenance=SIMULATED, id=None)
            for j, g in enumerate(truth.annotations) if j not in taken]
    return out


# --- a batch --------------------------------------------------------------------------------

def simulate_batch(store: AnnotationStore, batch: int, truth: LabelSet, predict: Predict,
                   params, image_ids: list[str] | None = None,
                   progress: bool = True, cost=None) -> list[ImageLog]:
    """Annotate every image of `image_ids` (default: all of `truth`), then mark the batch done.

    Problems on single images (a predictor failure, a refused box) are collected and raised
    together at the end, after the other images were annotated.
    """
    from tqdm import tqdm
    gt = truth.by_id()
    ids = image_ids if image_ids is not None else [im.id for im in truth]
    logs, problems, unpaid_run = [], [], 0
    for image_id in tqdm(ids, desc=f"simulating batch {batch:03d}", disable=not progress):
        if image_id not in gt:
            problems.append(f"{image_id}: no ground truth for this image")
            continue
        gave_up = params.stop_unpaid_clicks and 0 < params.give_up_after_unpaid <= unpaid_run
        try:
            logs.append(simulate_image(store, gt[image_id], predict,
                                       replace(params, rounds=0) if gave_up else params, cost))
        except Exception as e:  # noqa: BLE001 - report all images' problems together
            problems.append(f"{image_id}: {type(e).__name__}: {e}")
            continue
        if not gave_up:  # once given up, the rest of the batch gets no clicks
            unpaid_run = unpaid_run + 1 if logs[-1].unpaid else 0
    if problems:
        raise RuntimeError(f"simulating batch {batch}: {len(problems)} image(s) failed:\n"
                           + "\n".join(problems))
    store.mark_done(batch)
    return logs


def save_logs(logs: list[ImageLog], path: str | Path) -> Path:
    return write_json_atomic(path, [asdict(log) for log in logs])


def load_logs(path: str | Path) -> list[ImageLog]:
    out = []
    for d in json.loads(Path(path).read_text(encoding="utf-8")):
        rounds = [RoundLog(**r) for r in d.pop("rounds")]
        out.append(ImageLog(rounds=rounds, **d))
    return out
