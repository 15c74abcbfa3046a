"""`MemoryStore`: an AnnotationStore in memory (flows/annotate/annotation_store.py's rules,
no persistence), for simulations whose labels nobody keeps."""
from __future__ import annotations

from flows.annotate.annotation_store import (check_annotations, copy_labels,
                                              refreshed_annotations, stamp_edits, with_ids)
from tinyloop.annotations import Annotation, AnnotationError, Click, ImageLabels, LabelSet


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
                self.items[im.id] = copy_labels(im)

    def restart_batch(self, batch: int) -> None:
        """Every image back to its pre-annotations (the store holds one batch)."""
        self.items = {image_id: copy_labels(im) for image_id, im in self.start.items()}
        self.predictions.clear()
        self.done.discard(batch)

    def get_labels(self, image_id: str) -> ImageLabels:
        return copy_labels(self.items[image_id])

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
