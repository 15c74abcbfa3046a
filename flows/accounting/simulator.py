"""A simulated annotator that corrects a batch through the same `AnnotationStore` as a person.

For each image, in rounds (the defaults, flows.project.config.SimulatorParams, click 3 rounds x 3
clicks: the model sees the effect of earlier clicks before the next ones are placed):

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
a round whose clicks cost more (the workload model's click seconds) than the box edits they
saved, and after `give_up_after_unpaid` such images in a row the rest of the batch gets no
clicks; nor does it with `give_up_when_behind` once the batch's clicks so far have cost more
seconds than they saved (so clicks can make a batch slower by at most what one image's
unpaid round costs, ~14 s for 3 clicks).
Finally (`correct=True`) the labels are edited to equal the ground truth exactly: overlapping
boxes are matched one-to-one (Hungarian on IoU, as in flows.accounting.workload) and
moved/relabeled to the true box, unmatched boxes deleted and missing objects drawn, all with one
`store.set_annotations`. With `missing: click` (issue #30) a missing object is not drawn:
its centre is clicked (the same `click_sigma` noise) and c3det.image_click_box makes a box
from the image; the box is kept when its IoU with the true box is >= `accept_iou`, otherwise
moved onto it. Either way the label is the true box; its provenance (`click_box`, `edited`
when moved) tells the workload model what it cost. The click-to-box then learns from every
finished image (class sizes, its ranker), as it would from a person's boxes.

Every round is logged (`flows.annotate.process_log.ImageLog`) with the process signals the quality
ranker (flows/accounting/ranker.py) learns from, plus the true remaining error after the last round
(ground-truth side, never a ranker input).
"""
from __future__ import annotations

import zlib
from dataclasses import replace
from typing import Callable

import numpy as np

from c3det.image_click_box import ClickBoxParams, ImageClickBoxer, gray_image
from flows.annotate.annotation_store import AnnotationStore, model_boxes, refresh_predictions
from flows.project.config import WorkloadParams
# the process log has its own module (the FileStore builds it too); these names stay
# importable from here for the simulator's callers
from flows.annotate.process_log import (ImageLog, RoundLog, load_logs,  # noqa: F401
                               log_from_history, save_logs)
from flows.accounting.workload import (click_seconds, diff_image, edit_seconds, iou_matrix, match,
                            outside_ignore)
from tinyloop.annotations import Annotation, Box, Click, ImageLabels, LabelSet, Provenance

Predict = Callable[[str, list[Click]], list[Annotation]]
SIMULATED = Provenance("simulated")


# --- errors ---------------------------------------------------------------------------------

def find_errors(boxes: list[Annotation], truth: ImageLabels, error_iou: float,
                min_size: float = 0.0) -> list[Annotation]:
    """Ground-truth objects with no same-class box at IoU >= error_iou, largest first."""
    objects = outside_ignore(truth.annotations, truth.ignore)
    same = np.array([[b.category == g.category for b in boxes] for g in objects], dtype=bool)
    hit = (iou_matrix(objects, boxes) >= error_iou) & same.reshape(len(objects), len(boxes))
    wrong = [g for g, found in zip(objects, hit.any(axis=1))
             if not found and g.box.size >= min_size]
    return sorted(wrong, key=lambda g: -g.box.area)


def edits_needed(boxes: list[Annotation], truth: ImageLabels, iou: float = 0.5) -> int:
    """How many box edits turn `boxes` into the ground truth (diff categories but accepted)."""
    objects = outside_ignore(truth.annotations, truth.ignore)
    shown = outside_ignore(boxes, truth.ignore)
    pairs = match(shown, objects)
    ok = sum(1 for i, j, o in pairs
             if shown[i].category == objects[j].category and o >= iou)
    return len(shown) + len(objects) - len(pairs) - ok


# --- click mode: missing objects are centre-clicked, not drawn ------------------------------

class CentreClicker:
    """What `missing: click` needs beyond the store: each image's pixels and a click-to-box
    that learns from the boxes labelled so far."""

    def __init__(self, pixels: Callable[[str], np.ndarray], boxer: ImageClickBoxer):
        self.pixels = pixels      # image id -> (H, W) grayscale array
        self.boxer = boxer

    def provenance(self, target: Annotation, gray: np.ndarray, params,
                   rng: np.random.Generator) -> Provenance:
        """Centre-click `target`: a `click_box` provenance, `edited` when the produced box
        missed the true one (IoU < accept_iou) and had to be moved."""
        h, w = gray.shape
        click = noisy_click(target, 0, params, rng, w, h)
        produced = Box(*self.boxer.box(gray, click.x, click.y, target.category))
        return Provenance("click_box", edited=produced.iou(target.box) < params.accept_iou)

    def learn(self, gray: np.ndarray, annotations: list[Annotation]) -> None:
        for a in annotations:
            self.boxer.learn(gray, a.category, a.box.xyxy())


def centre_clicker(params: ClickBoxParams, image_paths: dict[str, str],
                   labeled: list[ImageLabels] = ()) -> CentreClicker:
    """A CentreClicker over `image_paths` (image id -> file), that has already learned from
    the `labeled` images' boxes (earlier batches; only the latest ranker_max_boxes count)."""
    clicker = CentreClicker(lambda image_id: gray_image(image_paths[image_id]),
                            ImageClickBoxer(params))
    recent, boxes = [], 0
    for item in reversed(list(labeled)):
        if boxes >= params.ranker_max_boxes:
            break
        recent.append(item)
        boxes += len(item.annotations)
    for item in reversed(recent):
        gray = gray_image(image_paths[item.id])
        clicker.learn(gray, outside_ignore(item.annotations, item.ignore))
    return clicker


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


def edits_seconds(boxes: list[Annotation], truth: ImageLabels, cost) -> float:
    """Seconds of box edits that would turn `boxes` into the ground truth."""
    return edit_seconds(diff_image(boxes, truth, cost.iou), cost)


def click_gain(before: list[Annotation], after: list[Annotation], n_clicks: int,
               truth: ImageLabels, cost) -> float:
    """Seconds a round of `n_clicks` saved minus what it cost (< 0: it did not pay)."""
    saved = edits_seconds(before, truth, cost) - edits_seconds(after, truth, cost)
    return saved - click_seconds({0: n_clicks}, cost)


def simulate_image(store: AnnotationStore, truth: ImageLabels, predict: Predict,
                   params, cost=None, clicker: CentreClicker | None = None) -> ImageLog:
    """Click, re-predict and (optionally) correct one image; see the module docstring.
    `cost` (flows.project.config.WorkloadParams) prices clicks and edits for
    `stop_unpaid_clicks`; `clicker` makes the boxes of missing objects with `missing: click`."""
    rng = image_rng(params.seed, truth.id)
    item = store.get_labels(truth.id)
    w, h = item.image.width, item.image.height
    current = item.annotations
    history = [(0, model_boxes(current))]
    clicked: list[Annotation] = []
    clicks = list(item.clicks)
    seen, unpaid, balance = [], False, 0.0
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
        gain = click_gain(before, current, len(new), truth, cost or WorkloadParams())
        balance += gain
        unpaid = params.stop_unpaid_clicks and gain < 0
        if unpaid:
            break
    log = log_from_history(truth.id, w, h, clicks, history)
    log.unpaid, log.click_balance_s = unpaid, balance
    for round_log, n in zip(log.rounds, seen):
        round_log.errors_seen = n
    log.gt_objects = len(outside_ignore(truth.annotations, truth.ignore))
    log.start_error = edits_needed(history[0][1], truth)
    log.remaining_error = edits_needed(current, truth)
    if params.correct:
        gray = clicker.pixels(truth.id) if needs_clicker(params, clicker) else None
        store.set_annotations(truth.id, corrected(current, truth,
                                                  missing_made(params, rng, clicker, gray)))
        if gray is not None:  # what the annotator labelled teaches the next clicks
            clicker.learn(gray, outside_ignore(truth.annotations, truth.ignore))
    return log


def needs_clicker(params, clicker: CentreClicker | None) -> bool:
    """Whether missing objects are centre-clicked; click mode without images is an error."""
    if params.missing == "click" and clicker is None:
        raise ValueError("simulator.missing is click but the simulator was given no images "
                         "to make boxes from (simulate_batch's clicker)")
    return params.missing == "click"


def missing_made(params, rng: np.random.Generator, clicker: CentreClicker | None,
                 gray: np.ndarray | None) -> Callable[[Annotation], Provenance]:
    """How a missing object gets its box: drawn (`missing: draw`) or centre-clicked."""
    if gray is None:
        return lambda target: SIMULATED
    return lambda target: clicker.provenance(target, gray, params, rng)


def corrected(current: list[Annotation], truth: ImageLabels,
              made: Callable[[Annotation], Provenance] = lambda target: SIMULATED,
              ) -> list[Annotation]:
    """The ground truth, reusing the ids of the boxes it was edited from (moves, relabels);
    a missing object's box gets the provenance `made(object)` (drawn: simulated)."""
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
    out += [replace(g, provenance=made(g), id=None)
            for j, g in enumerate(truth.annotations) if j not in taken]
    return out


# --- a batch --------------------------------------------------------------------------------

def simulate_batch(store: AnnotationStore, batch: int, truth: LabelSet, predict: Predict,
                   params, image_ids: list[str] | None = None,
                   progress: bool = True, cost=None,
                   clicker: CentreClicker | None = None) -> list[ImageLog]:
    """Annotate every image of `image_ids` (default: all of `truth`), then mark the batch done.
    `clicker` (centre_clicker) is needed with `missing: click`.

    Problems on single images (a predictor failure, a refused box) are collected and raised
    together at the end, after the other images were annotated.
    """
    from tinyloop.progress import bar
    needs_clicker(params, clicker)  # refuse before annotating anything
    gt = truth.by_id()
    ids = image_ids if image_ids is not None else [im.id for im in truth]
    logs, problems, unpaid_run, balance, clicks = [], [], 0, 0.0, 0
    images = bar(ids, desc=f"annotate batch {batch} (simulated)", unit="image",
                 enabled=progress)
    for image_id in images:
        if image_id not in gt:
            problems.append(f"{image_id}: no ground truth for this image")
            continue
        gave_up = params.stop_unpaid_clicks and (
            0 < params.give_up_after_unpaid <= unpaid_run
            or (params.give_up_when_behind and balance < 0))
        try:
            logs.append(simulate_image(store, gt[image_id], predict,
                                       replace(params, rounds=0) if gave_up else params, cost,
                                       clicker))
        except Exception as e:  # noqa: BLE001 - report all images' problems together
            problems.append(f"{image_id}: {type(e).__name__}: {e}")
            continue
        clicks += sum(r.clicks for r in logs[-1].rounds)
        images.set_postfix_str(f"{clicks} clicks", refresh=False)
        if not gave_up:  # once given up, the rest of the batch gets no clicks
            unpaid_run = unpaid_run + 1 if logs[-1].unpaid else 0
            balance += logs[-1].click_balance_s
    if problems:
        raise RuntimeError(f"simulating batch {batch}: {len(problems)} image(s) failed:\n"
                           + "\n".join(problems))
    store.mark_done(batch)
    return logs
