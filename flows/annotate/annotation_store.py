"""The one interface through which human (or simulated) edits arrive: `AnnotationStore`.

A person correcting boxes in the FiftyOne App (`flows.annotate.fiftyone_store.FiftyOneStore`) and
the simulated annotator (`flows.accounting.simulator`, writing to a `FileStore`) both go through
these methods, so the diff and workload code downstream cannot tell one from the other:

    open_batch(batch, preannotations)       give a batch to the annotators (again: edits stay)
                                            -> its image ids in order
    restart_batch(batch)                    discard the batch's edits and clicks, back to its
                                            pre-annotations (simulated batches only)
    get_labels(image_id) -> ImageLabels     the image's current working labels and clicks
    add_click(image_id, click)              one class-labelled point (with its round)
    set_annotations(image_id, annotations)  the image's whole box list after an edit
                                            (add / move / relabel / delete boxes)
    refresh_predictions(image_id, preds)    a model re-run after clicks replaces the boxes
                                            nobody touched (`refreshed_annotations`)
    record_predictions(image_id, preds)     remember the model's latest output (refined.json)
    mark_done(batch)                        the annotators say the batch is finished
    pull(batch) -> LabelSet                 write the batch's labels.json + clicks.json
                                            atomically and return the labels

This module owns the rules both stores share: which boxes a person owns (`is_human_owned`),
how a model refresh merges into them (`refreshed_annotations`, with `clip_to_image`), the
clicks.json format (`read_clicks`, `write_clicks`) and the retry of an edit that met a newer
one (`retry_stale`).

Rules every store keeps:
- Every edit is persisted before the call returns (FileStore: one atomic file per image),
  so killing the process never loses an edit that was acknowledged.
- An annotation gets a stable `id` the first time a store sees it; a box that keeps its id
  but changes box or class was *edited*: a model-made box then gets `Provenance.edited=True`
  and is never replaced by a later model refresh (`is_human_owned`).
- Bad boxes (unknown class, zero size, outside the image) are refused with an
  `AnnotationError` naming the image, the box and the fix: never silently dropped or kept.
- Pulling twice gives the same file.
- A concurrent edit is never silently overwritten: FileStore serialises writers with a file
  lock and, given `expected_version`, refuses a stale edit with `StaleEditError`; FiftyOne
  refuses a save over a newer one (HTTP 412 in the App), and FiftyOneStore re-reads and
  re-applies its change (`retry_stale`).

Stores (one module each, under flows/annotate/; `stores.py` registers them by name for
`flows.store`):
- `FileStore` (file_store.py) keeps a batch's working state under
  ``data/batches/NNN/work/`` (one JSON file per image, written with `tinyloop.atomic`),
  beside the layout's preannotations.json,
  clicks.json, labels.json and the `done` marker. Pull also writes ``refined.json`` (the
  model's last output per image, what the edits started from) and each image file keeps the
  history of model outputs by click round (`process_log`, the quality ranker's input).
- `MemoryStore` (memory_store.py): the same rules in memory, for simulations whose labels
  nobody keeps.
- `flows.annotate.fiftyone_store.FiftyOneStore` (FiftyOne App, people).

`refresh_predictions(store, image_id, predictions)` is how a model re-run after clicks
reaches any store without touching human-made or human-edited boxes.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

from tinyloop.annotations import Annotation, AnnotationError, Click, ImageLabels, LabelSet
from tinyloop.atomic import write_json_atomic

MODEL_SOURCES = ("model", "click_refined")


class StaleEditError(AnnotationError):
    """An edit based on an outdated view of the image (HTTP 412 in FiftyOne's terms)."""


class EditConflict(RuntimeError):
    """Another writer kept saving the same image; the edit was not applied."""


@runtime_checkable
class AnnotationStore(Protocol):
    """Where annotators' edits go; see the module docstring for the rules."""

    def open_batch(self, batch: int, preannotations: LabelSet | None = None) -> list[str]: ...

    def restart_batch(self, batch: int) -> None: ...

    def get_labels(self, image_id: str) -> ImageLabels: ...

    def add_click(self, image_id: str, click: Click) -> None: ...

    def set_annotations(self, image_id: str, annotations: list[Annotation]) -> None: ...

    def refresh_predictions(self, image_id: str,
                            predictions: list[Annotation]) -> list[Annotation]: ...

    def record_predictions(self, image_id: str, predictions: list[Annotation]) -> None: ...

    def mark_done(self, batch: int) -> None: ...

    def pull(self, batch: int) -> LabelSet: ...


# --- helpers every store uses ---------------------------------------------------------------

def new_annotation_id() -> str:
    return uuid.uuid4().hex[:16]


def with_ids(labels: LabelSet) -> LabelSet:
    """A copy where every annotation has an id (so a diff can follow a box by id)."""
    return replace(labels, images=[
        ImageLabels(im.image, [a if a.id is not None else replace(a, id=new_annotation_id())
                               for a in im.annotations], list(im.ignore), list(im.clicks))
        for im in labels.images])


def stamp_edits(old: list[Annotation], new: list[Annotation]) -> list[Annotation]:
    """Give new boxes an id; mark model boxes whose box or class changed as edited.

    `old` is what the store held before the edit, `new` what the editor sends. A box is
    the same box when its id is the same.
    """
    before = {a.id: a for a in old if a.id is not None}
    out = []
    for a in new:
        if a.id is None:
            a = replace(a, id=new_annotation_id())
        prev = before.get(a.id)
        if (prev is not None and a.provenance.source in MODEL_SOURCES
                and not a.provenance.edited
                and (prev.box != a.box or prev.category != a.category
                     or prev.obox != a.obox)):
            a = replace(a, provenance=replace(a.provenance, edited=True))
        out.append(a)
    ids = [a.id for a in out]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise AnnotationError(f"annotation ids {dup} appear twice in one edit; every box "
                              "needs its own id (leave id=None for new boxes)")
    return out


def check_annotations(item: ImageLabels, annotations: list[Annotation],
                      categories: list[str]) -> None:
    """Refuse boxes that cannot be labels, naming all of them at once."""
    problems = []
    for a in annotations:
        if a.category not in categories:
            problems.append(f"box {a.box.xyxy()} has unknown class {a.category!r} "
                            f"(known: {', '.join(categories)})")
            continue
        why = a.box.problem(item.image.width, item.image.height)
        if why:
            problems.append(why)
    if problems:
        raise AnnotationError(f"image {item.id}: " + "; ".join(problems)
                              + ". Fix or delete these boxes, then save again.")


# --- which boxes a person owns, and how a model refresh merges into them ----------------------

def is_human_owned(a: Annotation) -> bool:
    """A box the annotator made or touched: model refreshes must leave it alone."""
    return a.provenance.source not in MODEL_SOURCES or a.provenance.edited


def model_boxes(annotations: list[Annotation]) -> list[Annotation]:
    """The model-made boxes (edited or not): what the model showed."""
    return [a for a in annotations if a.provenance.source in MODEL_SOURCES]


def clip_to_image(predictions: list[Annotation], width: float,
                  height: float) -> list[Annotation]:
    """Model boxes clipped to the image, those left under 1 px wide or high dropped: a
    model's overhang is not the annotator's problem to fix."""
    clipped = [replace(p, box=p.box.clip(width, height)) for p in predictions]
    return [p for p in clipped if p.box.width >= 1 and p.box.height >= 1]


def predictions_to_add(predictions: list[Annotation], kept: list[Annotation],
                       width: float, height: float) -> list[Annotation]:
    """The predictions a refresh adds next to the `kept` (human-owned) boxes: clipped to the
    image, without those on one of them (IoU >= 0.5: the annotator already fixed that
    object), each without an id (the store gives it a new one)."""
    return [replace(p, id=None) for p in clip_to_image(predictions, width, height)
            if not any(p.box.iou(k.box) >= 0.5 for k in kept)]


def refreshed_annotations(current: list[Annotation], predictions: list[Annotation],
                          width: float, height: float) -> list[Annotation]:
    """An image's boxes after a model refresh: the human-owned ones of `current` exactly as
    they are, then the new `predictions` (`predictions_to_add`) instead of the rest."""
    kept = [a for a in current if is_human_owned(a)]
    return kept + predictions_to_add(predictions, kept, width, height)


def refresh_predictions(store: AnnotationStore, image_id: str,
                        predictions: list[Annotation]) -> list[Annotation]:
    """Replace the image's untouched model boxes by new `predictions` (e.g. after clicks);
    returns the image's boxes after it.

    Human-made and human-edited boxes stay exactly as they are (`refreshed_annotations`),
    and the store remembers the model's latest output, so the workload can charge edits
    against what the annotator actually saw last. Each store does it in one write, so an
    edit saved meanwhile is never overwritten by a refresh computed from an older view.
    """
    return store.refresh_predictions(image_id, predictions)


# --- clicks.json ----------------------------------------------------------------------------

def click_json(c: Click) -> dict:
    return {"x": c.x, "y": c.y, "category": c.category, "round": c.round, "source": c.source}


def click_from_json(d: dict) -> Click:
    return Click(d["x"], d["y"], d["category"], int(d.get("round", 1)),
                 d.get("source", "human"))


def write_clicks(path: Path, labels: LabelSet, batch: int) -> Path:
    """A batch's clicks.json: {"batch", "categories", "clicks": {image_id: [{x, y,
    category, round, source}]}}, every image of `labels` listed (also without clicks)."""
    return write_json_atomic(path, {
        "batch": batch, "categories": list(labels.categories),
        "clicks": {im.id: [click_json(c) for c in im.clicks] for im in labels}})


def read_clicks(path: Path) -> dict[str, list[Click]]:
    """clicks.json (`write_clicks`) by image id; {} when the batch has none yet."""
    if not path.exists():
        return {}
    doc = json.loads(path.read_text(encoding="utf-8"))
    return {image_id: [click_from_json(c) for c in clicks]
            for image_id, clicks in doc.get("clicks", {}).items()}


# --- an edit that met a newer one -----------------------------------------------------------

def retry_stale(edit: Callable[[], None], retries: int, what: str) -> None:
    """Run `edit` until it is not refused as stale, at most `retries` + 1 times.

    `edit` must read the current state, apply its change to it and save conditionally,
    raising `StaleEditError` when someone saved in between (FiftyOne's HTTP 412): the next
    try starts again from that newer state, so neither edit is lost. Raises `EditConflict`
    naming `what` when every try was refused. (FileStore needs no retry: its writers wait
    for the batch lock instead.)
    """
    for _ in range(retries + 1):
        try:
            edit()
            return
        except StaleEditError:
            continue  # someone saved in between: re-read and apply again
    raise EditConflict(f"{what} kept changing under this edit ({retries + 1} tries); "
                       "reload it and edit again")


def copy_labels(item: ImageLabels) -> ImageLabels:
    """A copy whose lists can change without changing `item`'s."""
    return ImageLabels(item.image, list(item.annotations), list(item.ignore), list(item.clicks))
