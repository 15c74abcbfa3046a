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

Stores here:
- `FileStore` keeps a batch's working state under ``data/batches/NNN/work/`` (one JSON file
  per image, written with `tinyloop.atomic`), beside the layout's preannotations.json,
  clicks.json, labels.json and the `done` marker. Pull also writes ``refined.json`` (the
  model's last output per image, what the edits started from) and each image file keeps the
  history of model outputs by click round (`process_log`, the quality ranker's input).
- `MemoryStore`: the same rules in memory, for simulations whose labels nobody keeps.
- `flows.annotate.fiftyone_store.FiftyOneStore` (FiftyOne App, people).

`refresh_predictions(store, image_id, predictions)` is how a model re-run after clicks
reaches any store without touching human-made or human-edited boxes.
"""
from __future__ import annotations

import json
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable
from urllib.parse import quote

from flows.project.layout import ProjectLayout
from flows.accounting.process_log import ImageLog, log_from_history
from tinyloop.annotations import (Annotation, AnnotationError, Box, Click, ImageLabels,
                                  LabelSet, Provenance)
from tinyloop.atomic import write_json_atomic, write_text_atomic
from tinyloop.cocofile import from_coco, read_labels, to_coco, write_labels

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


# --- MemoryStore -------------------------------------------------------------------------------

class MemoryStore:
    """An AnnotationStore in memory, with FileStore's rules but no persistence.

    For simulations that only need the process (ranker training data, benchmarks): nothing
    here survives the process, so never hand it a person's work.
    """

    def __init__(self, preannotations: LabelSet):
        self.categories = list(preannotations.categories)
        self.start: dict[str, ImageLabels] = {}   # image id -> its pre-annotations, with ids
        self.items: dict[str, ImageLabels] = {}   # image id -> its working labels
        self.predictions: dict[str, list[Annotation]] = {}
        self.done: set[int] = set()
        self._add(preannotations)

    def open_batch(self, batch: int, preannotations: LabelSet | None = None) -> list[str]:
        """Add the images of `preannotations` the store does not hold yet (edits stay);
        returns their ids. Without pre-annotations: every image held (the store does not
        tell batches apart: one store, one simulated batch)."""
        if preannotations is None:
            return list(self.items)
        self._add(preannotations)
        return [im.id for im in preannotations]

    def _add(self, preannotations: LabelSet) -> None:
        for im in with_ids(LabelSet(self.categories, list(preannotations))):
            if im.id not in self.items:
                self.start[im.id] = im
                self.items[im.id] = _copy(im)

    def restart_batch(self, batch: int) -> None:
        """Every image back to its pre-annotations (the store holds one batch)."""
        self.items = {image_id: _copy(im) for image_id, im in self.start.items()}
        self.predictions.clear()
        self.done.discard(batch)

    def get_labels(self, image_id: str) -> ImageLabels:
        return _copy(self.items[image_id])

    def add_click(self, image_id: str, click: Click) -> None:
        if click.category not in self.categories:
            raise AnnotationError(f"image {image_id}: click has unknown class "
                                  f"{click.category!r}")
        self.items[image_id].clicks.append(click)

    def set_annotations(self, image_id: str, annotations: list[Annotation]) -> None:
        item = self.items[image_id]
        check_annotations(item, annotations, self.categories)
        item.annotations = stamp_edits(item.annotations, list(annotations))

    def refresh_predictions(self, image_id: str,
                            predictions: list[Annotation]) -> list[Annotation]:
        item = self.items[image_id]
        self.set_annotations(image_id, refreshed_annotations(
            item.annotations, predictions, item.image.width, item.image.height))
        self.record_predictions(image_id, predictions)
        return list(item.annotations)

    def record_predictions(self, image_id: str, predictions: list[Annotation]) -> None:
        self.predictions[image_id] = list(predictions)

    def mark_done(self, batch: int) -> None:
        self.done.add(batch)

    def pull(self, batch: int) -> LabelSet:
        return LabelSet(self.categories, [self.get_labels(i) for i in self.items],
                        info={"batch": batch})


def _copy(item: ImageLabels) -> ImageLabels:
    """A copy whose lists can change without changing `item`'s."""
    return ImageLabels(item.image, list(item.annotations), list(item.ignore), list(item.clicks))


# --- FileStore --------------------------------------------------------------------------------

class FileStore:
    """An AnnotationStore on plain files: data/batches/NNN/work/<image>.json, one per image.

    Open a batch once with its pre-annotations (`open_batch`); after that the store finds
    every image by id, also in a new process (a restart resumes where the edits stopped).
    Each per-image file holds the working labels (a one-image tinyloop labels document),
    the model's latest output for that image and an edit counter.
    """

    def __init__(self, root: str | Path = "."):
        self.layout = ProjectLayout(root)
        self._where: dict[str, int] = {}      # image id -> batch
        self._categories: dict[int, list[str]] = {}

    # -- batches ---------------------------------------------------------------------------
    def work_dir(self, batch: int) -> Path:
        return self.layout.batch_dir(batch) / "work"

    def refined_path(self, batch: int) -> Path:
        """The model's latest output per image (after clicks): what edits started from."""
        return self.layout.batch_dir(batch) / "refined.json"

    def open_batch(self, batch: int, preannotations: LabelSet | None = None) -> list[str]:
        """Start (or resume) editing a batch; returns its image ids in order.

        With `preannotations`, writes preannotations.json if the batch has none and a working
        file for every image that has none yet: existing working files (edits) are never
        overwritten. Without, reads the batch's preannotations.json.
        """
        pre_path = self.layout.preannotations(batch)
        if preannotations is None or pre_path.exists():
            preannotations = read_labels(pre_path)
        else:
            preannotations = with_ids(preannotations)
            write_labels(preannotations, pre_path)
        work = self.work_dir(batch)
        meta = work / "_batch.json"
        if not meta.exists():
            write_json_atomic(meta, {"categories": preannotations.categories,
                                     "images": [im.id for im in preannotations]})
        for item in preannotations:
            path = self._image_path(batch, item.id)
            if not path.exists():
                self._write(batch, _copy(item), model_output=item.annotations, version=0,
                            history=[_history_entry(0, item.annotations)],
                            categories=preannotations.categories)
        self._index(batch)
        return [im.id for im in preannotations]

    def restart_batch(self, batch: int) -> None:
        """Delete the batch's working files: the next `open_batch` starts every image again
        from preannotations.json. Simulated batches only: a person's edits would be lost."""
        shutil.rmtree(self.work_dir(batch), ignore_errors=True)
        self._where = {i: b for i, b in self._where.items() if b != batch}
        self._categories.pop(batch, None)

    def batch_images(self, batch: int) -> list[str]:
        return self._meta(batch)["images"]

    def categories(self, batch: int) -> list[str]:
        if batch not in self._categories:
            self._categories[batch] = self._meta(batch)["categories"]
        return self._categories[batch]

    def batch_of(self, image_id: str) -> int:
        if image_id not in self._where:
            for n in self.layout.batch_numbers():
                if (self.work_dir(n) / "_batch.json").exists():
                    self._index(n)
        try:
            return self._where[image_id]
        except KeyError:
            raise KeyError(f"image {image_id!r} is in no open batch under "
                           f"{self.layout.batches}; open its batch first "
                           "(FileStore.open_batch)") from None

    # -- the AnnotationStore protocol -----------------------------------------------------
    def get_labels(self, image_id: str) -> ImageLabels:
        return self._read(image_id)[0]

    def add_click(self, image_id: str, click: Click) -> None:
        batch = self.batch_of(image_id)
        if click.category not in self.categories(batch):
            raise AnnotationError(f"image {image_id}: click at ({click.x:g}, {click.y:g}) has "
                                  f"unknown class {click.category!r} (known: "
                                  f"{', '.join(self.categories(batch))})")
        with self._locked(batch):
            item, model_output, version, history = self._read(image_id)
            item.clicks.append(click)
            self._write(batch, item, model_output, version + 1, history)

    def set_annotations(self, image_id: str, annotations: list[Annotation],
                        expected_version: int | None = None) -> None:
        """Replace the image's boxes. With `expected_version` (from `version()` when the
        editor loaded the image) a concurrent edit in between raises `StaleEditError`
        instead of being overwritten: reload, re-apply, save again."""
        batch = self.batch_of(image_id)
        with self._locked(batch):
            item, model_output, version, history = self._read(image_id)
            if expected_version is not None and expected_version != version:
                raise StaleEditError(f"image {image_id}: edited elsewhere since you loaded "
                                     f"it (version {expected_version}, now {version}); "
                                     "reload it and apply your change again")
            check_annotations(item, annotations, self.categories(batch))
            item.annotations = stamp_edits(item.annotations, list(annotations))
            self._write(batch, item, model_output, version + 1, history)

    def refresh_predictions(self, image_id: str,
                            predictions: list[Annotation]) -> list[Annotation]:
        """New boxes (`refreshed_annotations`) and the model's latest output in one write,
        under the batch lock: an edit saved meanwhile is never overwritten."""
        batch = self.batch_of(image_id)
        with self._locked(batch):
            item, _, version, history = self._read(image_id)
            boxes = refreshed_annotations(item.annotations, predictions,
                                          item.image.width, item.image.height)
            check_annotations(item, boxes, self.categories(batch))
            item.annotations = stamp_edits(item.annotations, boxes)
            history.append(_history_entry(_last_round(item), predictions))
            self._write(batch, item, list(predictions), version + 1, history)
        return self.get_labels(image_id).annotations  # as stored (boxes round-trip as xywh)

    def record_predictions(self, image_id: str, predictions: list[Annotation]) -> None:
        """Remember the model's latest output for an image (refined.json, process_log)."""
        batch = self.batch_of(image_id)
        with self._locked(batch):
            item, _, version, history = self._read(image_id)
            history.append(_history_entry(_last_round(item), predictions))
            self._write(batch, item, list(predictions), version + 1, history)

    def mark_done(self, batch: int) -> None:
        self._meta(batch)  # fails clearly for a batch that was never opened
        write_text_atomic(self.layout.done_marker(batch), "done\n")

    def is_done(self, batch: int) -> bool:
        return self.layout.done_marker(batch).exists()

    def pull(self, batch: int) -> LabelSet:
        """Write labels.json, clicks.json and refined.json atomically; same input, same files."""
        cats = self.categories(batch)
        items, refined = [], []
        for image_id in self.batch_images(batch):
            item, model_output, _, _ = self._read(image_id)
            items.append(item)
            refined.append(ImageLabels(item.image, model_output, list(item.ignore)))
        labels = LabelSet(cats, items, info={"batch": batch})
        write_labels(labels, self.layout.labels(batch))
        write_clicks(self.layout.clicks(batch), labels, batch)
        write_labels(LabelSet(cats, refined, info={"batch": batch}),
                     self.refined_path(batch))
        return labels

    # -- beyond the protocol ------------------------------------------------------------------
    def version(self, image_id: str) -> int:
        """How many edits the image has had: lets a caller detect a stale view."""
        return self._read(image_id)[2]

    def process_log(self, image_id: str) -> ImageLog:
        """The image's click/prediction process (ranker input), from its clicks and every
        model output recorded for it."""
        item, _, _, history = self._read(image_id)
        hist = [(h["round"], [Annotation("?", Box(*b[:4]),
                                         provenance=Provenance("model", score=b[4]))
                              for b in h["boxes"]]) for h in history]
        return log_from_history(image_id, item.image.width, item.image.height,
                                item.clicks, hist)

    @contextmanager
    def _locked(self, batch: int):
        """One writer per batch at a time, across processes (read-modify-write of a file)."""
        import fcntl
        with open(self.work_dir(batch) / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- files ------------------------------------------------------------------------------
    def _meta(self, batch: int) -> dict:
        path = self.work_dir(batch) / "_batch.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise KeyError(f"batch {batch} was never opened for editing ({path} is "
                           "missing); call FileStore.open_batch first") from None

    def _index(self, batch: int) -> None:
        for image_id in self._meta(batch)["images"]:
            self._where[image_id] = batch

    def _image_path(self, batch: int, image_id: str) -> Path:
        return self.work_dir(batch) / f"{quote(image_id, safe='')}.json"

    def _write(self, batch: int, item: ImageLabels, model_output: list[Annotation],
               version: int, history: list[dict],
               categories: list[str] | None = None) -> None:
        cats = categories or self.categories(batch)
        doc = {"version": version, "history": history,
               "labels": to_coco(LabelSet(cats, [item])),
               "model_output": to_coco(LabelSet(cats, [ImageLabels(item.image,
                                                                   list(model_output))]))}
        write_json_atomic(self._image_path(batch, item.id), doc, indent=None)

    def _read(self, image_id: str) -> tuple[ImageLabels, list[Annotation], int, list[dict]]:
        batch = self.batch_of(image_id)
        path = self._image_path(batch, image_id)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise KeyError(f"{path}: working labels of image {image_id!r} are missing; "
                           f"re-open batch {batch} (FileStore.open_batch) to recreate them "
                           "from preannotations.json") from None
        except json.JSONDecodeError as e:
            raise AnnotationError(f"{path}: not valid JSON ({e}); restore it with "
                                  "'dvc checkout' or delete it to restart this image from "
                                  "its pre-annotations") from None
        item = from_coco(doc["labels"], source=str(path)).images[0]
        model_output = from_coco(doc["model_output"], source=str(path)).images[0].annotations
        return item, model_output, int(doc.get("version", 0)), doc.get("history", [])


def _history_entry(round_no: int, predictions: list[Annotation]) -> dict:
    """A model output as the process log needs it: round and [x1, y1, x2, y2, score]."""
    return {"round": round_no,
            "boxes": [[*a.box.xyxy(), a.score] for a in model_boxes(predictions)]}


def _last_round(item: ImageLabels) -> int:
    """The image's latest click round (0 before any click): a model output recorded now
    answers that round's clicks."""
    return max((c.round for c in item.clicks), default=0)
