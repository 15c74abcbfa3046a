"""The FiftyOne dataset as the annotators' window onto the files under data/.

Files stay the source of truth: `sync_batch` copies a batch's files INTO a persistent dataset,
`pull_batch` copies the annotators' corrections back OUT into `data/batches/NNN/labels.json`.

One sample per image (matched by `image_id`), with fields

- `ground_truth`  Detections from data/pool/ground_truth.json (when the source has labels)
- `predictions`   the model's latest output: preannotations.json, then each "Refine with
                  clicks"; each detection carries its provenance: `source` (model |
                  click_refined), `model_version`, `confidence`
- `corrections`   Detections the annotators edit in the App's Annotate tab (label schema set
                  and activated); pre-filled from `predictions`
- `<field>_oriented` for `ground_truth`, `predictions` and `corrections`: each oriented box
                  (Annotation.obox) also as a closed 4-point Polyline, linked to its detection
                  (same `uid` and `instance`): the App edits axis-aligned boxes and polylines,
                  so a rotated box is seen and corrected as a polyline (`corrections_oriented`
                  is editable too)
- `clicks`        Keypoints, one per click: `label` (class), `round`, `source`
- `new_clicks`    Detections the annotators draw as small boxes where they want to click (the
                  Annotate tab draws boxes, not points); pull counts each as a click (box
                  centre) of the next round, "Refine with clicks" moves them into `clicks`
- `box_clicks`    Detections drawn as small boxes on objects that have no box: "Boxes from
                  clicks" turns each into a box of its class in `corrections` (provenance
                  `click_box`, flows.annotate.click_boxes) and empties the field; pull refuses
                  a point still there (it would be an object silently lost)
- `batch`, `order_position`, `review_status` (todo | done), `review_priority` (higher =
  review first), `problems` (why the last pull refused this sample) and the sample tag
  `needs-fix` while problems remain.
- `selection_strategy`, `selection_score`, `selection_reason`: why the image came in this
  batch (order.select: the strategy and its score; "fixed:<order.method>" and no score for
  the fixed order), so annotators and leads can sort by it and see why an image came now.

How edits are recognised: every detection tinyloop writes remembers what it wrote
(`wlabel`, `wbox` - the relative box - and `px`, the exact pixel box). A detection whose label
and box still equal what was written is unchanged: it is pulled with its exact pixel box and
provenance. Anything else was edited in the App: it is pulled with `edited=True` (or as a
human box when tinyloop never wrote it). Polylines likewise remember `wlabel`, `wpoints` and
the exact pixel `obox`; how a detection and its polyline combine into one Annotation (an
edited polyline is the object's new oriented box, a deleted one removes it) is
`read_objects`. "Refine with clicks" replaces only the boxes no
person owns (`flows.annotate.annotation_store.is_human_owned`), so an annotator's edit is never
overwritten.

Saves of code that edits samples (`edit_sample`) are conditional on `last_modified_at`, like
the App's (which answers HTTP 412 to a save over a newer one): a conflict re-reads the
sample and applies the change again (`flows.annotate.annotation_store.retry_stale`).

Bad boxes (unknown class, zero size, outside the image) are never dropped or kept silently:
`pull_batch` lists them, tags the samples the annotator sees, and writes no labels file until
they are fixed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tinyloop.annotations import Annotation, Click, ImageLabels, LabelSet
from tinyloop.cocofile import read_labels, write_labels
from flows.annotate.annotation_store import read_clicks, write_clicks
from flows.project.layout import ProjectLayout, batch_name
from flows.project.selection_record import chosen, chosen_in_batch
from flows.annotate.fiftyone_schema import (CORRECTIONS, PREDICTIONS, GROUND_TRUTH, CLICKS,
                                            NEW_CLICKS, BOX_CLICKS, NEEDS_FIX, oriented,
                                            get_dataset,
                                            set_annotation_schemas)
from flows.annotate.fiftyone_convert import (fmt_box, from_detection, read_objects, set_objects,
                                             backfill_polylines, from_keypoint, keypoints_of)

@dataclass(frozen=True)


class Problem:
    """One box the pull refused; `image` is the tinyloop image id."""
    image: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.image}: {self.message} (fix: {self.fix})"


class PullError(RuntimeError):
    """The batch has boxes that cannot be labels; nothing was written."""

    def __init__(self, batch: int, problems: list[Problem]):
        self.batch, self.problems = batch, problems
        lines = "\n  ".join(str(p) for p in problems)
        super().__init__(f"batch {batch_name(batch)}: {len(problems)} box(es) need a fix "
                         f"before the labels can be pulled (samples tagged '{NEEDS_FIX}' in "
                         f"the App):\n  {lines}")


@dataclass
class PullResult:
    labels: LabelSet
    path: Path | None
    problems: list[Problem] = field(default_factory=list)


# --- sync: files -> dataset ---------------------------------------------------------------
def image_root(project_root: Path, source: str) -> Path:
    src = Path(source)
    return src if src.is_absolute() else Path(project_root) / src


def _read_optional(path: Path) -> LabelSet | None:
    return read_labels(path) if path.exists() else None


def sync_batch(project_root: str | Path, batch: int, dataset_name: str, images_dir: Path,
               priorities: dict[str, float] | None = None, refill: bool = False):
    """Create/refresh the samples of one batch from its files; returns the dataset.

    `images_dir`: where ImageRecord.path is relative to. `priorities`: image id -> review
    priority (higher first); default: the quality ranker's predicted error from the batch's
    review.json, 0 without one. On a re-sync, `corrections`, `clicks` and `predictions`
    (annotators' work, refined model output) are kept unless `refill`; ground truth, order,
    batch and priority are refreshed from the files.
    """
    import fiftyone as fo
    from fiftyone import ViewField as F
    layout = ProjectLayout(project_root)
    pre = read_labels(layout.preannotations(batch))
    gt = _read_optional(layout.ground_truth)
    gt_by_id = gt.by_id() if gt else {}
    clicks_by_id = read_clicks(layout.clicks(batch))
    order = json.loads(layout.order.read_text()) if layout.order.exists() else {}
    ranked = chosen_in_batch(layout, batch)  # why each image came in this batch
    if priorities is None:  # the quality ranker's output (`tinyloop review`), when present
        review = layout.batch_dir(batch) / "review.json"
        priorities = (json.loads(review.read_text()).get("predicted_error", {})
                      if review.exists() else {})

    ds = get_dataset(dataset_name)
    ds.info.update({"project_root": str(Path(project_root).resolve()),
                    "classes": list(pre.categories)})
    ds.save()
    items = {item.id: item for item in pre}

    def fill(sample, item: ImageLabels, is_new: bool) -> None:
        rec = item.image
        w, h = rec.width, rec.height
        sample["batch"] = batch
        sample["order_position"] = order.get(rec.id, {}).get("position")
        sample["review_priority"] = float(priorities.get(rec.id, 0.0))
        why = chosen(layout, batch, rec.id, ranked)
        sample["selection_strategy"] = why.strategy
        sample["selection_score"] = why.score
        sample["selection_reason"] = why.reason
        if is_new or sample["review_status"] is None:
            sample["review_status"] = "todo"
        if rec.id in gt_by_id:
            set_objects(sample, GROUND_TRUTH, gt_by_id[rec.id].annotations, w, h)
        # what annotators and "Refine with clicks" changed stays, unless `refill`
        for name in (PREDICTIONS, CORRECTIONS):
            if refill or is_new or sample[name] is None:
                set_objects(sample, name, item.annotations, w, h)
            else:
                backfill_polylines(sample, name, w, h)
        if refill or is_new or sample[CLICKS] is None:
            sample[CLICKS] = keypoints_of(clicks_by_id.get(rec.id, item.clicks), w, h)
        if is_new:
            sample[NEW_CLICKS] = fo.Detections()
            sample[BOX_CLICKS] = fo.Detections()

    existing = ds.select_by("image_id", list(items))
    seen = set()
    for sample in existing.iter_samples(autosave=True, batch_size=200, progress=False):
        seen.add(sample["image_id"])
        fill(sample, items[sample["image_id"]], False)
    new_samples = []
    for item in pre:
        if item.id in seen:
            continue
        rec = item.image
        sample = fo.Sample(filepath=str((Path(images_dir) / rec.path).resolve()))
        sample["image_id"] = rec.id
        sample["metadata"] = fo.ImageMetadata(width=rec.width, height=rec.height,
                                              num_channels=rec.channels)
        fill(sample, item, True)
        new_samples.append(sample)
    if new_samples:
        ds.add_samples(new_samples, progress=False)
    set_annotation_schemas(ds, pre.categories)
    view = ds.match(F("batch") == batch).sort_by("review_priority", reverse=True)
    ds.save_view(view_name(batch), view, overwrite=True,
                 description=f"batch {batch_name(batch)}, highest review priority first")
    return ds


def view_name(batch: int) -> str:
    return f"batch-{batch_name(batch)}"


def restart_batch(project_root: str | Path, batch: int, dataset_name: str) -> int:
    """Put the batch's samples back as `sync_batch` first filled them: pre-annotations in
    `predictions` and `corrections`, the batch's first clicks, nothing drawn in
    `new_clicks`, review_status todo. Returns how many samples it reset (0 before the first
    sync). Every edit of the batch is lost: for simulated batches only."""
    import fiftyone as fo
    if not fo.dataset_exists(dataset_name):
        return 0
    layout = ProjectLayout(project_root)
    items = read_labels(layout.preannotations(batch)).by_id()
    clicks_by_id = read_clicks(layout.clicks(batch))
    ds = get_dataset(dataset_name, create=False)
    reset = 0
    for sample in ds.select_by("image_id", list(items)).iter_samples(
            autosave=True, batch_size=200, progress=False):
        item = items[sample["image_id"]]
        w, h = item.image.width, item.image.height
        set_objects(sample, PREDICTIONS, item.annotations, w, h)
        set_objects(sample, CORRECTIONS, item.annotations, w, h)
        sample[CLICKS] = keypoints_of(clicks_by_id.get(item.id, item.clicks), w, h)
        sample[NEW_CLICKS] = fo.Detections()
        sample[BOX_CLICKS] = fo.Detections()
        sample["review_status"] = "todo"
        reset += 1
    return reset


# --- pull: dataset -> files ---------------------------------------------------------------
def sample_labels(sample, template: ImageLabels, classes: list[str]
                  ) -> tuple[ImageLabels, list[Problem]]:
    """The corrected labels of one sample, and every box that cannot be a label."""
    rec = template.image
    w, h = rec.width, rec.height
    anns, problems = [], []
    for obj in read_objects(sample, CORRECTIONS, w, h):
        why = obj.problem or _label_problem(obj.ann, classes, w, h)
        if why:
            problems.append(Problem(rec.id, *why))
        else:
            anns.append(obj.ann)
    clicks = [from_keypoint(kp, w, h) for kp in
              (sample[CLICKS].keypoints if sample[CLICKS] else [])]
    for c in clicks:
        if c.category not in classes:
            problems.append(Problem(rec.id, f"click at ({c.x:.0f}, {c.y:.0f}) has unknown "
                                    f"class {c.category!r}",
                                    f"use one of {', '.join(classes)}"))
    for det in (sample[NEW_CLICKS].detections if sample[NEW_CLICKS] else []):
        x, y, bw, bh = det.bounding_box
        c = Click((x + bw / 2) * w, (y + bh / 2) * h, det.label or "",
                  max((k.round for k in clicks), default=0) + 1)
        clicks.append(c)
    clicks = [c for c in clicks if c.category in classes]
    problems += _unboxed_points(sample, rec.id, w, h)
    return ImageLabels(rec, anns, list(template.ignore), clicks), problems


def _unboxed_points(sample, image_id: str, w: int, h: int) -> list[Problem]:
    """A point left in `box_clicks` is an object the annotator marked and that has no box
    yet: the pull must not drop it silently."""
    return [Problem(image_id, f"point at ({(x + bw / 2) * w:.0f}, {(y + bh / 2) * h:.0f}) "
                              f"({det.label}) in {BOX_CLICKS} has no box yet",
                    "run 'Boxes from clicks' on this image, or delete the point")
            for det in (sample[BOX_CLICKS].detections if sample[BOX_CLICKS] else [])
            for x, y, bw, bh in [det.bounding_box]]


def _label_problem(ann: Annotation, classes: list[str], w: int, h: int
                   ) -> tuple[str, str] | None:
    """(message, fix) when `ann` cannot be a label: unknown class, bad box."""
    if ann.category not in classes:
        return (f"box {fmt_box(ann.box)} has unknown class {ann.category!r}",
                f"pick one of {', '.join(classes)} in the Annotate tab")
    bad = ann.box.problem(w, h)
    return (bad, "redraw the box inside the image or delete it") if bad else None


def pull_batch(project_root: str | Path, batch: int, dataset_name: str,
               write: bool = True) -> PullResult:
    """Write the batch's labels.json, clicks.json and refined.json (the model's latest
    output per image, `predictions`: what the workload charges edits against) atomically;
    the same dataset state gives the same bytes.

    Raises PullError (after tagging the affected samples) when any box is bad; nothing is
    written then. Samples without problems get their tag and `problems` cleared.
    """
    layout = ProjectLayout(project_root)
    pre = read_labels(layout.preannotations(batch))
    ds = get_dataset(dataset_name, create=False)
    # raw documents: building FiftyOne Sample objects costs ~20 ms per image, this ~1 ms
    docs = ds._sample_collection.find(
        {"image_id": {"$in": [im.id for im in pre]}},
        {"image_id": 1, "tags": 1, "problems": 1, CORRECTIONS: 1, oriented(CORRECTIONS): 1,
         CLICKS: 1, NEW_CLICKS: 1, BOX_CLICKS: 1, PREDICTIONS: 1})
    samples = {d["image_id"]: RawSample(d) for d in docs}
    images, refined, problems = [], [], []
    for item in pre:
        sample = samples.get(item.id)
        if sample is None:
            problems.append(Problem(item.id, "image is missing from the FiftyOne dataset",
                                    f"run `tinyloop app sync {batch}`"))
            continue
        labels, found = sample_labels(sample, item, pre.categories)
        _flag(ds, sample, found)
        problems += found
        images.append(labels)
        w, h = item.image.width, item.image.height
        preds = sample[PREDICTIONS].detections if sample[PREDICTIONS] else []
        refined.append(ImageLabels(item.image, [from_detection(d, w, h) for d in preds],
                                   list(item.ignore)))
    labels = LabelSet(list(pre.categories), images, {"batch": batch})  # as FileStore writes
    if problems:
        raise PullError(batch, problems)
    path = None
    if write:
        path = layout.labels(batch)
        write_labels(labels, path)
        write_clicks(layout.clicks(batch), labels, batch)
        write_labels(LabelSet(list(pre.categories), refined, {"batch": batch}),
                     refined_path(layout, batch))
    return PullResult(labels, path, problems)


def refined_path(layout: ProjectLayout, batch: int) -> Path:
    """Same file as FileStore.refined_path: the model's latest output per image."""
    return layout.batch_dir(batch) / "refined.json"


def _flag(ds, raw: "RawSample", problems: list[Problem]) -> None:
    """Tag the sample `needs-fix` and list its problems (or clear both when fixed)."""
    msgs = [f"{p.message} (fix: {p.fix})" for p in problems]
    tags = [t for t in raw.tags if t != NEEDS_FIX] + ([NEEDS_FIX] if msgs else [])
    if msgs != list(raw.doc.get("problems") or []) or tags != list(raw.tags):
        sample = ds[raw.id]
        sample["problems"] = msgs
        sample.tags = tags
        sample.save()


class RawLabel:
    """A label's raw MongoDB dict with the few Label methods the converters use."""

    def __init__(self, d: dict):
        self.d = d

    def has_field(self, name: str) -> bool:
        return name in self.d

    def get_field(self, name: str):
        return self.d.get(name)

    id = property(lambda self: str(self.d["_id"]))
    instance_id = property(lambda self: str((self.d.get("instance") or {}).get("_id") or "")
                           or None)
    label = property(lambda self: self.d.get("label"))
    bounding_box = property(lambda self: self.d.get("bounding_box"))
    confidence = property(lambda self: self.d.get("confidence"))
    points = property(lambda self: self.d.get("points"))


class _RawList:
    def __init__(self, items: list[dict]):
        self.detections = self.keypoints = self.polylines = [RawLabel(i) for i in items]


class RawSample:
    """A sample's raw MongoDB document read like a Sample (`sample[field].detections`)."""

    def __init__(self, doc: dict):
        self.doc = doc
        self.id = str(doc["_id"])
        self.tags = list(doc.get("tags") or [])

    def __getitem__(self, field: str):
        value = self.doc.get(field)
        if not value:
            return None
        for key in ("detections", "keypoints", "polylines"):
            if key in value:
                return _RawList(value[key] or [])
        return _RawList([])
