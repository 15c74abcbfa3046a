"""The loop's model policy, in one place: which model serves which batch, which one is
current, what a new model starts from, and from which score its boxes are shown.

- Model n (models/iter-NNN/model.pt) is trained on batches 1..n and counts once its
  train.json marks it finished. It pre-annotates batch n+1 and re-predicts that batch's
  clicks (`model_for_batch`); batch 1 has no model.
- The current model is the newest finished one (`current_model`): the App's "Refine with
  clicks" runs it; `publish_current` copies it to models/current/model.pt, the output of
  dvc.yaml's train stage.
- With flows.warm_start, model n starts from model n-1's weights (`warm_start`), when
  model n-1 is of the detector family model n trains (c3det.detectors).
- Its boxes are shown from flows.min_score, or with "auto" from the score the evaluate step
  chose for it on the held-out images (`choose_min_score`), kept in threshold.json beside
  the checkpoint (c3det.threshold, the only reader and writer of that file).
  `min_score_for` says which applies.
- `predictor(p, model)` is the predictor every caller shows boxes with (the simulated
  annotator, the App plugin; pre-annotation cuts `every_box_predictor`'s boxes at the
  same score): the same checkpoint, tiling and threshold, so all of them show the same
  boxes. Both come from c3det.detectors, whatever family the model is.

Nothing here imports torch until a predictor is built.
"""
from __future__ import annotations

import json
import logging
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from c3det import detectors
from c3det.threshold import min_score_of, read_threshold, write_threshold
from flows.project.layout import ProjectLayout
from flows.accounting.workload import NONE_SHOWN, best_threshold, wt_by_threshold
from tinyloop.cocofile import read_labels
from tinyloop.annotations import Annotation, Click, ImageLabels, LabelSet
from tinyloop.atomic import copy_file_atomic, write_json_atomic
from tinyloop.progress import bar

if TYPE_CHECKING:
    from c3det.image_click_box import ImageClickBoxer

log = logging.getLogger(__name__)

AUTO_FALLBACK = 0.5  # flows.min_score auto, before the model's threshold is known
THRESHOLDS = [round(0.05 * k, 2) for k in range(1, 20)]  # min_score candidates for "auto"
FINISHED = "train.json"  # written last by training: the model is finished


# --- which model ----------------------------------------------------------------------------

def is_finished(layout: ProjectLayout, n: int) -> bool:
    return (layout.model_dir(n) / FINISHED).exists()


def model_for_batch(p, n: int) -> Path | None:
    """The checkpoint that pre-annotates batch n and refines its clicks: model n-1 (none
    for batch 1)."""
    if n <= 1:
        return None
    path = p.layout.model(n - 1)
    if not is_finished(p.layout, n - 1):
        raise FileNotFoundError(f"batch {n} needs model {n - 1} ({path}), which has not "
                                f"finished training; run the iteration of batch {n - 1} first")
    return path


def current_model(layout: ProjectLayout) -> Path:
    """The newest finished model (models/iter-NNN/model.pt with the largest NNN)."""
    numbers = [int(d.parent.name.removeprefix("iter-"))
               for d in layout.models.glob(f"iter-*/{FINISHED}")
               if d.parent.name.removeprefix("iter-").isdigit()]
    if not numbers:
        raise FileNotFoundError(f"no trained model under {layout.models}; clicks can refine "
                                "boxes once the first iteration trained")
    return layout.model(max(numbers))


def publish_current(p, n: int) -> None:
    """Copy model n to models/current (the dvc.yaml stage output), once."""
    cur = p.layout.models / "current"
    src, dst, stamp = p.layout.model(n), cur / "model.pt", cur / "source.json"
    if dst.exists() and stamp.exists() and json.loads(stamp.read_text()).get("batch") == n:
        return
    copy_file_atomic(src, dst)
    write_json_atomic(stamp, {"batch": n, "model": str(src.relative_to(p.layout.root))})


def warm_start(p, n: int, previous: Path | None = None) -> Path | None:
    """Model n-1's weights (or `previous`, when it exists), when flows.warm_start and they
    exist (a fresh run only)."""
    if not p.params.flows.warm_start or n <= 1:
        return None
    for path in (previous, p.layout.model(n - 1)):
        if path is not None and path.exists():
            return path if _same_family(p, path) else None
    return None


def _same_family(p, path: Path) -> bool:
    """Is `path` of the detector family params train? (c3det.detector changed: no.)"""
    family = detectors.family_for(p.params.c3det)
    if detectors.family_of_checkpoint(path) is family:
        return True
    log.warning("%s is not a %s model (c3det.detector changed?): the next model trains "
                "without its weights", path, family.name)
    return False


# --- from which score -------------------------------------------------------------------------

def min_score_for(p, model_path: Path) -> float:
    """flows.min_score, or with "auto" the score chosen for this model by `evaluate`."""
    if p.params.flows.min_score != "auto":
        return p.params.flows.min_score
    chosen = min_score_of(model_path, fallback=None)  # a model's path is all a chunk has
    if chosen is None:
        log.warning("%s has no threshold (model not evaluated: no held-out split?); showing "
                    "boxes from score %.2f", model_path, AUTO_FALLBACK)
        return AUTO_FALLBACK
    return chosen


def boxes_hidden(p, n: int) -> bool:
    """True when batch n's model exists but flows.min_score auto chose to show none of it."""
    model = model_for_batch(p, n)
    return model is not None and min_score_for(p, model) >= NONE_SHOWN


def choose_min_score(p, n: int, test: LabelSet) -> dict | None:
    """With flows.min_score auto: the score from which model n's boxes are shown, the one
    that would have saved the most on the held-out images `test` by both WT and annotation
    time (workload.best_threshold), among the scores from which model n-1 did not cost time
    on batch n (flows.auto_track_record); written beside the model, once."""
    if p.params.flows.min_score != "auto":
        return None
    model = p.layout.model(n)
    chosen = read_threshold(model)
    if chosen is not None:
        return chosen
    if not test.images:
        return None
    # Through Predictor, not map_vs_clicks' 0-click forward: the threshold must be chosen on
    # exactly the boxes pre-annotation shows (tiles of large images, NMS across tiles); the
    # price is one more forward per held-out image.
    curve = savings_by_threshold(p, model, test)
    gain = p.params.flows.auto_min_gain_pct
    held_out = best_threshold(curve, gain)
    chosen = {"min_score": held_out, "wt_by_min_score": curve, "images": len(test.images)}
    track = track_record(p, n) if p.params.flows.auto_track_record else None
    if track is not None:
        chosen["track_record"] = {"model": n - 1, "batch": n, "wt_by_min_score": track}
        chosen["min_score"] = best_threshold(curve, gain, track)
        if chosen["min_score"] != held_out:
            log.info("model %d: shown from %s, not %s: from there model %d cost time on "
                     "batch %d", n, chosen["min_score"], held_out, n - 1, n)
            chosen["held_out_min_score"] = held_out
    write_threshold(model, chosen)
    return chosen


def savings_by_threshold(p, model_path: Path, truth: LabelSet,
                         scored: LabelSet | None = None) -> list[dict]:
    """What `model_path`'s boxes would have saved on the images of `truth`, per min_score of
    THRESHOLDS (workload.wt_by_threshold); from `scored` (every box it scored on those
    images, kept at pre-annotation) when given, else from a forward per image."""
    if scored is None:
        every_box = every_box_predictor(p, model_path)
        scored = LabelSet(truth.categories, [
            ImageLabels(i.image, every_box.scored(str(p.source / i.image.path)))
            for i in bar(truth.images, desc=f"score cut of {model_path.parent.name}",
                         unit="image")])
    return wt_by_threshold(scored, truth, p.params.workload, THRESHOLDS)


def track_record(p, n: int) -> list[dict] | None:
    """Model n-1's savings per min_score on batch n, which annotators have just corrected
    (None for model 1, or before batch n is pulled): the pool's own images, as the loop's
    ordering picks them. Read from the boxes model n-1 scored when it pre-annotated the
    batch (a project from before they were kept: one forward per image)."""
    labels = p.layout.labels(n)
    if n < 2 or not labels.exists() or not p.layout.model(n - 1).exists():
        return None
    scored = p.layout.scored_predictions(n)
    return savings_by_threshold(p, p.layout.model(n - 1), read_labels(labels),
                                read_labels(scored) if scored.exists() else None)


# --- the predictor ------------------------------------------------------------------------------

def predictor(p, model_path: Path):
    """The predictor of `model_path` with the project's classes and tiling, showing boxes
    from `min_score_for` the model."""
    return detectors.predictor(model_path, p.classes, tiling=p.params.tiling,
                               min_score=min_score_for(p, model_path))


def every_box_predictor(p, model_path: Path):
    """The predictor of `model_path` for every box it scores, its `scored` (the boxes
    pre-annotation keeps as the track record, the savings per threshold): flows.min_score
    does not enter."""
    return detectors.predictor(model_path, p.classes, tiling=p.params.tiling)


# --- the App's "Boxes from clicks": the project's model and image boxer -------------------

def project_click_boxes(p) -> Callable[[str, Sequence[Click], Sequence[Annotation]],
                                        list[Annotation]]:
    """`boxes_from_clicks` bound to project `p` (flows.project.project.Project): its current
    model with the model policy's classes, tiling and threshold (none before the first model
    finished), and an image boxer learned from the labelled batches, built the first time a
    point needs it."""
    from flows.annotate.click_boxes import boxes_from_clicks
    try:
        model = current_model(p.layout)
    except FileNotFoundError:
        model = None
    model_predictor = predictor(p, model) if model is not None else None
    boxer = cache(lambda: learned_image_boxer(p))
    return lambda image, points, existing: boxes_from_clicks(image, points, existing,
                                                              model_predictor, boxer)


def learned_image_boxer(p) -> ImageClickBoxer:
    """The image boxer of `annotate.click_box`, having learned the size priors (and, from
    ranker_min_boxes boxes on, the ranker) from every labelled batch's boxes, as the
    simulator's click mode does (flows.accounting.simulator.centre_clicker)."""
    from flows.accounting.simulator import centre_clicker
    labelled, n = [], 1
    while p.layout.labels(n).exists():
        labelled += read_labels(p.layout.labels(n)).images
        n += 1
    paths = {im.id: str(p.source / im.image.path) for im in labelled}
    return centre_clicker(p.params.annotate.click_box, paths, labelled).boxer
