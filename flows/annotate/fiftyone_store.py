"""`FiftyOneStore`: the AnnotationStore whose edits live in the project's FiftyOne dataset.

What a person does in the App (draw, move, relabel, delete boxes in `corrections` and
oriented boxes as polylines in `corrections_oriented`, draw clicks in `new_clicks`) and what
code does through this class (the simulator, "Refine with clicks") land in the same sample
fields, so `pull` cannot tell them apart.

Concurrent edits: the App saves a sample with `If-Match: <etag of last_modified_at>` and the
server answers 412 when someone saved the sample in between (fiftyone.server.routes.sample).
This class writes under the same rule (`fiftyone_sync.edit_sample`: a save conditional on
`last_modified_at`); on a conflict it re-reads the sample and applies its change again on top
of the newer state, `retries` times, then raises `EditConflict`. An edit is never written
over someone else's newer one.

Call `flows.annotate.mongo.ensure_mongo(project_root)` before using it (FiftyOne reads its database
URI when first imported).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from flows.annotate import fiftyone_convert as fconvert, fiftyone_refine as frefine
from flows.annotate import fiftyone_sync as fsync
from flows.annotate.annotation_store import check_annotations, clip_to_image, stamp_edits, with_ids
# what this store's edits raise when they keep meeting newer ones; importable from here too
from flows.annotate.annotation_store import EditConflict  # noqa: F401
from flows.annotate.stores import StoreKind, register
from flows.project.layout import ProjectLayout
from tinyloop.annotations import Annotation, AnnotationError, Click, ImageLabels, LabelSet
from tinyloop.cocofile import read_labels, write_labels


class FiftyOneStore:
    """`params`: the project's Params (dataset name from `annotate.dataset_name`, images
    from `data.source`) or just a dataset name. Starts the project's mongod when FiftyOne
    has no database configured yet."""

    def __init__(self, project_root: str | Path, params=None, retries: int = 5):
        self.root = Path(project_root)
        self.layout = ProjectLayout(project_root)
        if params is None or isinstance(params, str):
            self.dataset_name, self.source = params or "tinyloop", None
        else:
            self.dataset_name, self.source = params.annotate.dataset_name, params.data.source
        self.retries = retries
        self._ds = None
        from flows.annotate.mongo import database_uri
        database_uri(self.root)

    def open_batch(self, batch: int, preannotations: LabelSet | None = None,
                   priorities: dict[str, float] | None = None) -> list[str]:
        """Publish a batch to the App (FileStore's `open_batch`): writes preannotations.json
        (with box ids) when missing, then syncs; annotators' corrections are kept."""
        path = self.layout.preannotations(batch)
        if preannotations is not None and not path.exists():
            write_labels(with_ids(preannotations), path)
        if self.source is None:
            raise ValueError("FiftyOneStore needs the project's Params (data.source) to "
                             "publish a batch: FiftyOneStore(root, params)")
        images = fsync.image_root(self.root, self.source)
        self._ds = fsync.sync_batch(self.root, batch, self.dataset_name, images, priorities)
        self.__dict__.pop("_pre", None)
        return [im.id for im in read_labels(path)]

    def restart_batch(self, batch: int) -> None:
        """Reset the batch's samples to its pre-annotations (`fiftyone_sync.restart_batch`):
        every correction and click on them is lost, so only for simulated batches. Samples
        not synced yet are left to `open_batch`."""
        fsync.restart_batch(self.root, batch, self.dataset_name)

    @property
    def dataset(self):
        if self._ds is None:
            self._ds = fsync.get_dataset(self.dataset_name, create=False)
        return self._ds

    @property
    def categories(self) -> list[str]:
        return list(self.dataset.info.get("classes", []))

    def _sample(self, image_id: str):
        try:
            return self.dataset.one(_by_id(image_id))
        except ValueError:
            raise KeyError(f"image {image_id!r} is not in FiftyOne dataset "
                           f"{self.dataset_name!r}; sync its batch first "
                           "(`tinyloop app sync BATCH`)") from None

    def _template(self, sample) -> ImageLabels:
        """The image record (and ignore regions) of a sample, from the batch's files."""
        batch = sample["batch"]
        pre = self._preannotations(batch)
        return pre.by_id()[sample["image_id"]]

    def _preannotations(self, batch: int) -> LabelSet:
        cache = self.__dict__.setdefault("_pre", {})
        if batch not in cache:
            cache[batch] = read_labels(self.layout.preannotations(batch))
        return cache[batch]

    # --- the protocol -------------------------------------------------------------------
    def get_labels(self, image_id: str) -> ImageLabels:
        doc = self.dataset._sample_collection.find_one({"image_id": image_id})
        if doc is None:
            self._sample(image_id)  # raises the clear KeyError
        sample = fsync.RawSample(doc)
        template = self._preannotations(doc["batch"]).by_id()[image_id]
        labels, problems = fsync.sample_labels(sample, template, self.categories)
        if problems:
            raise AnnotationError("; ".join(str(p) for p in problems))
        return labels

    def add_click(self, image_id: str, click: Click) -> None:
        if click.category not in self.categories:
            raise AnnotationError(f"image {image_id}: click at ({click.x:g}, {click.y:g}) has "
                                  f"unknown class {click.category!r} (known: "
                                  f"{', '.join(self.categories)})")

        def change(sample, template):
            import fiftyone as fo
            w, h = template.image.width, template.image.height
            kps = list(sample[fsync.CLICKS].keypoints) if sample[fsync.CLICKS] else []
            kps.append(fconvert.to_keypoint(click, w, h))
            sample[fsync.CLICKS] = fo.Keypoints(keypoints=kps)

        self._edit(image_id, change)

    def set_annotations(self, image_id: str, annotations: list[Annotation]) -> None:
        def change(sample, template):
            w, h = template.image.width, template.image.height
            check_annotations(template, annotations, self.categories)
            # what the sample holds now, oriented boxes edited as polylines included
            old = [o.ann for o in fsync.read_objects(sample, fsync.CORRECTIONS, w, h) if o.ann]
            new = stamp_edits(old, list(annotations))
            fsync.set_objects(sample, fsync.CORRECTIONS, new, w, h)

        self._edit(image_id, change)

    def refresh_predictions(self, image_id: str,
                            predictions: list[Annotation]) -> list[Annotation]:
        """`fiftyone_sync.refresh_sample` (the same as "Refine with clicks" in the App) in
        one conditional save: an edit saved meanwhile is kept."""
        def change(sample, template):
            w, h = template.image.width, template.image.height
            check_annotations(template, clip_to_image(predictions, w, h), self.categories)
            frefine.refresh_sample(sample, predictions, w, h)

        self._edit(image_id, change)
        return self.get_labels(image_id).annotations

    def record_predictions(self, image_id: str, predictions: list[Annotation]) -> None:
        """Show the model's latest output for the image in `predictions`."""
        def change(sample, template):
            fsync.set_objects(sample, fsync.PREDICTIONS, predictions,
                              template.image.width, template.image.height)

        self._edit(image_id, change)

    def mark_done(self, batch: int) -> None:
        frefine.mark_batch_done(self.dataset, self.root, batch)

    def pull(self, batch: int) -> LabelSet:
        """labels.json + clicks.json of the batch; raises fiftyone_sync.PullError on bad
        boxes (the samples are tagged for the annotator, nothing is written)."""
        return fsync.pull_batch(self.root, batch, self.dataset_name).labels

    # --- optimistic concurrency ------------------------------------------------------------
    def _edit(self, image_id: str, change: Callable) -> None:
        """`change(sample, template)` saved like the App saves (`fiftyone_sync.edit_sample`)."""
        frefine.edit_sample(lambda: self._sample(image_id),
                          lambda sample: change(sample, self._template(sample)),
                          self.retries, f"image {image_id}")


def _by_id(image_id: str):
    from fiftyone import ViewField as F
    return F("image_id") == image_id



register(StoreKind("fiftyone", lambda root, params: FiftyOneStore(root, params)))
