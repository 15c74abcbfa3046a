"""The App operators' work on the dataset: "Refine with clicks" (re-predict a sample from its
clicks, replacing only the boxes no person owns, saved conditionally like the App's),
"Boxes from clicks" (each point in `box_clicks` becomes a `click_box` box in `corrections`,
flows.annotate.click_boxes; nothing already there changes) and "Mark batch done" (review
status + the done signal, flows/project/done_signal.py)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

from tinyloop.annotations import Annotation, Click
from flows.annotate.annotation_store import (StaleEditError, new_annotation_id, predictions_to_add,
                                             retry_stale)
from flows.annotate.fiftyone_schema import (CORRECTIONS, PREDICTIONS, CLICKS, BOX_CLICKS)
from flows.annotate.fiftyone_convert import (read_objects, set_objects, put_objects,
                                             linked_polylines, backfill_polylines, from_keypoint,
                                             detections_of, absorb_new_clicks)

# --- "Refine with clicks" and "Mark batch done" (the plugin's operators call these) -------
def refine_samples(ds, sample_ids: Iterable[str], predict, retries: int = 5) -> dict[str, int]:
    """Re-run the detector with each sample's clicks; refresh `predictions` and the boxes of
    `corrections` no person owns (`refresh_sample`). `predict(image_path, clicks) ->
    list[Annotation]`.

    Saves are conditional on `last_modified_at` (as the App's), so an edit the annotator
    saves meanwhile is kept: the sample is re-read and refined again (`edit_sample`).
    """
    counts = {"samples": 0, "replaced": 0, "kept": 0}
    for sid in sample_ids:
        saved = {}  # the counts of the try that was saved (a refused try starts over)

        def refine(sample) -> None:
            w, h = sample.metadata.width, sample.metadata.height
            absorb_new_clicks(sample, w, h)
            clicks = [from_keypoint(k, w, h) for k in
                      (sample[CLICKS].keypoints if sample[CLICKS] else [])]
            saved["replaced"], saved["kept"] = refresh_sample(
                sample, predict(sample.filepath, clicks), w, h)

        edit_sample(lambda: ds[sid], refine, retries, f"sample {sid}")
        counts["samples"] += 1
        counts["replaced"] += saved["replaced"]
        counts["kept"] += saved["kept"]
    return counts


def refresh_sample(sample, predictions: list[Annotation], w: int, h: int) -> tuple[int, int]:
    """Show `predictions` in `predictions`; in `corrections`, keep every object a person
    owns (`LabelObject.owned`: drawn, or its box or polyline edited, or still to be fixed)
    exactly as it is, detection and polyline, and put the predictions a refresh adds
    (`predictions_to_add`: clipped to the image, none on a kept box) instead of the others.
    Returns (objects replaced, objects kept). The sample is not saved."""
    backfill_polylines(sample, CORRECTIONS, w, h)
    objects = read_objects(sample, CORRECTIONS, w, h)
    kept = [o for o in objects if o.owned]
    added = predictions_to_add(predictions, [o.ann for o in kept if o.ann], w, h)
    added = [replace(a, id=new_annotation_id()) for a in added]
    set_objects(sample, PREDICTIONS, predictions, w, h)
    new_dets = detections_of(added, w, h).detections
    put_objects(sample, CORRECTIONS, [o.det for o in kept if o.det] + new_dets,
                [o.poly for o in kept if o.poly] + linked_polylines(added, new_dets, w, h))
    return len(objects) - len(kept), len(kept)


def boxes_from_clicks_samples(ds, sample_ids: Iterable[str], make_boxes,
                              retries: int = 5) -> dict[str, int]:
    """Turn each sample's `box_clicks` points into boxes appended to `corrections`, then
    empty `box_clicks`. `make_boxes(image_path, points, existing) -> list[Annotation]`
    (flows.annotate.click_boxes.boxes_from_clicks with the model and boxer bound); every
    detection and polyline already in `corrections` is kept exactly as it is. Saved
    conditionally (`edit_sample`): an annotator's save in between is re-read, not lost."""
    import fiftyone as fo
    counts = {"samples": 0, "points": 0, "boxes": 0}
    for sid in sample_ids:
        saved = {}

        def add_boxes(sample) -> None:
            w, h = sample.metadata.width, sample.metadata.height
            points = [_point(det, w, h) for det in
                      (sample[BOX_CLICKS].detections if sample[BOX_CLICKS] else [])]
            saved["points"], saved["boxes"] = len(points), 0
            if not points:
                return
            objects = read_objects(sample, CORRECTIONS, w, h)
            made = make_boxes(sample.filepath, points, [o.ann for o in objects if o.ann])
            made = [replace(a, id=new_annotation_id(), box=a.box.clip(w, h)) for a in made]
            _append_detections(sample, detections_of(made, w, h).detections)
            sample[BOX_CLICKS] = fo.Detections()
            saved["boxes"] = len(made)

        edit_sample(lambda: ds[sid], add_boxes, retries, f"sample {sid}")
        counts["samples"] += 1
        counts["points"] += saved["points"]
        counts["boxes"] += saved["boxes"]
    return counts


def _point(det, w: int, h: int) -> Click:
    """A point drawn as a small box (the Annotate tab draws boxes): its centre, its label."""
    x, y, bw, bh = det.bounding_box
    return Click((x + bw / 2) * w, (y + bh / 2) * h, det.label or "")


def _append_detections(sample, new_dets: list) -> None:
    """`corrections` with `new_dets` after its detections, which stay the same objects
    (ids, attributes, links to their polylines untouched)."""
    import fiftyone as fo
    current = sample[CORRECTIONS].detections if sample[CORRECTIONS] else []
    sample[CORRECTIONS] = fo.Detections(detections=list(current) + list(new_dets))


def edit_sample(load: Callable, change: Callable, retries: int, what: str) -> None:
    """Apply `change(sample)` to the sample `load()` returns and save it only if nobody
    saved it since it was read (the App's rule); on a conflict read it again and re-apply
    (`retry_stale`), at most `retries` times, then `EditConflict`."""
    def attempt() -> None:
        sample = load()
        sample.reload(hard=True)  # FiftyOne caches Sample objects: start from the DB
        seen = sample.last_modified_at
        change(sample)
        save_if_unchanged(sample, seen, what)

    retry_stale(attempt, retries, what)


def save_if_unchanged(sample, seen, what: str) -> None:
    """Save `sample` if its `last_modified_at` is still `seen`, as the App's save route
    does; `StaleEditError` (the App's HTTP 412) when someone saved it in between."""
    from fiftyone.server.exceptions import DbVersionMismatchError
    from fiftyone.server.routes.sample import save_sample
    try:
        save_sample(sample, seen)
    except DbVersionMismatchError:
        raise StaleEditError(f"{what}: saved by someone else since it was read") from None


def mark_batch_done(ds, project_root: str | Path, batch: int) -> bool:
    """Set review_status=done on the batch's samples and signal the flow (writes the
    layout's `done` marker; resumes a waiting Prefect run). True if a run was resumed."""
    from fiftyone import ViewField as F
    view = ds.match(F("batch") == batch)
    view.set_values("review_status", ["done"] * len(view))
    from flows.project.done_signal import signal_done
    return bool(signal_done(project_root, batch))
