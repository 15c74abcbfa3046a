"""`FileStore`: an AnnotationStore on plain files, data/batches/NNN/work/<image>.json (one
per image, written atomically), beside the batch's preannotations.json, clicks.json,
labels.json, refined.json and `done` marker; each image file keeps the model's outputs by
click round for the process log (flows/annotate/process_log.py). The rules are
flows/annotate/annotation_store.py's."""
from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from flows.annotate.annotation_store import (StaleEditError, check_annotations, copy_labels,
                                              model_boxes, refreshed_annotations,
                                              stamp_edits, with_ids, write_clicks)
from flows.annotate.process_log import ImageLog, log_from_history
from flows.annotate.stores import StoreKind, register
from flows.project.layout import ProjectLayout
from tinyloop.annotations import (Annotation, AnnotationError, Box, Click, ImageLabels,
                                  LabelSet, Provenance)
from tinyloop.atomic import write_json_atomic, write_text_atomic
from tinyloop.cocofile import from_coco, read_labels, to_coco, write_labels


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
                self._write(batch, copy_labels(item), model_output=item.annotations, version=0,
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


register(StoreKind("file", lambda root, params: FileStore(root)))
