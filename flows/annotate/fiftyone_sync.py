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
- `clicks`        Keypoints, one per click: `label` (class), `round`, `source`
- `new_clicks`    Detections the annotators draw as small boxes where they want to click (the
                  Annotate tab draws boxes, not points); pull counts each as a click (box
                  centre) of the next round, "Refine with clicks" moves them into `clicks`
- `batch`, `order_position`, `review_status` (todo | done), `review_priority` (higher =
  review first), `problems` (why the last pull refused this sample) and the sample tag
  `needs-fix` while problems remain.

How edits are recognised: every detection tinyloop writes remembers what it wrote
(`wlabel`, `wbox` - the relative box - and `px`, the exact pixel box). A detection whose label
and box still equal what was written is unchanged: it is pulled with its exact pixel box and
provenance. Anything else was edited in the App: it is pulled with `edited=True` (or as a
human box when tinyloop never wrote it). "Refine with clicks" replaces only the boxes no
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from tinyloop.annotations import (Annotation, Box, Click, ImageLabels, LabelSet, OrientedBox,
                                  Provenance)
from tinyloop.cocofile import read_labels, write_labels
from flows.annotate.annotation_store import (MODEL_SOURCES, StaleEditError, is_human_owned,
                                    new_annotation_id, predictions_to_add, read_clicks,
                                    retry_stale, write_clicks)
from flows.project.layout import ProjectLayout, batch_name

CORRECTIONS = "corrections"
PREDICTIONS = "predictions"
GROUND_TRUTH = "ground_truth"
CLICKS = "clicks"
NEW_CLICKS = "new_clicks"
NEEDS_FIX = "needs-fix"
_EPS = 1e-9


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


# --- the dataset ------------------------------------------------------------------------
def get_dataset(name: str, create: bool = True):
    """The persistent dataset `name` (FiftyOne must be configured: mongo.ensure_mongo)."""
    import fiftyone as fo
    if fo.dataset_exists(name):
        return fo.load_dataset(name)
    if not create:
        raise KeyError(f"no FiftyOne dataset {name!r}; run `tinyloop app sync` first")
    ds = fo.Dataset(name, persistent=True)
    ds.add_sample_field("image_id", fo.StringField)
    ds.add_sample_field("batch", fo.IntField)
    ds.add_sample_field("order_position", fo.IntField)
    ds.add_sample_field("review_status", fo.StringField)
    ds.add_sample_field("review_priority", fo.FloatField)
    ds.add_sample_field("problems", fo.ListField, subfield=fo.StringField)
    for name_ in (GROUND_TRUTH, PREDICTIONS, CORRECTIONS, NEW_CLICKS):
        ds.add_sample_field(name_, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    ds.add_sample_field(CLICKS, fo.EmbeddedDocumentField, embedded_doc_type=fo.Keypoints)
    ds.create_index("image_id", unique=True)
    return ds


def set_annotation_schemas(ds, classes: list[str]) -> None:
    """Label schemas that make `corrections` and `new_clicks` editable in the Annotate tab."""
    schemas = {}
    for name in (CORRECTIONS, NEW_CLICKS):
        schema = ds.generate_label_schemas(name, scan_samples=False)
        schema["classes"] = list(classes)
        schema["component"] = "dropdown"
        schemas[name] = schema
    ds.set_label_schemas(schemas)
    ds.activate_label_schemas([CORRECTIONS, NEW_CLICKS])


# --- conversions ------------------------------------------------------------------------
def _rel(box: Box, w: int, h: int) -> list[float]:
    return [box.x1 / w, box.y1 / h, box.width / w, box.height / h]


def to_detection(ann: Annotation, w: int, h: int):
    """An Annotation as a FiftyOne Detection that remembers exactly what was written."""
    import fiftyone as fo
    rel = _rel(ann.box, w, h)
    p = ann.provenance
    det = fo.Detection(label=ann.category, bounding_box=rel, confidence=p.score,
                       uid=ann.id, source=p.source, model_version=p.model_version,
                       edited=p.edited, difficult=ann.difficult, px=ann.box.xyxy(),
                       wbox=list(rel), wlabel=ann.category,
                       obox=ann.obox.as_list() if ann.obox else None)
    return det


def unchanged(det) -> bool:
    """True when the detection still is what tinyloop wrote (no one edited it)."""
    wbox, wlabel = det.get_field("wbox") if det.has_field("wbox") else None, \
        det.get_field("wlabel") if det.has_field("wlabel") else None
    if wbox is None or det.bounding_box is None or wlabel != det.label:
        return False
    return all(abs(a - b) <= _EPS for a, b in zip(det.bounding_box, wbox))


def _attr(det, name, default=None):
    return det.get_field(name) if det.has_field(name) else default


def from_detection(det, w: int, h: int) -> Annotation:
    """The Annotation a correction detection stands for (before validity checks)."""
    if unchanged(det):
        box = Box(*_attr(det, "px"))
        obox = OrientedBox(*_attr(det, "obox")) if _attr(det, "obox") else None
        edited = bool(_attr(det, "edited", False))
    else:
        x, y, bw, bh = det.bounding_box or [0.0, 0.0, 0.0, 0.0]
        box = Box(x * w, y * h, (x + bw) * w, (y + bh) * h)
        obox = None  # the App edits axis-aligned boxes: an old oriented box no longer fits
        edited = True
    source = _attr(det, "source")
    if source is None:  # drawn in the App
        prov = Provenance("human")
    else:
        score = det.confidence if source in MODEL_SOURCES else None
        prov = Provenance(source, _attr(det, "model_version"), score,
                          edited if source != "human" else False)
    return Annotation(det.label or "", box, obox, prov, bool(_attr(det, "difficult", False)),
                      _attr(det, "uid") or det.id)


def to_keypoint(click: Click, w: int, h: int):
    import fiftyone as fo
    pt = [click.x / w, click.y / h]
    return fo.Keypoint(label=click.category, points=[pt], round=click.round,
                       source=click.source, px=[click.x, click.y], wpoint=list(pt))


def from_keypoint(kp, w: int, h: int) -> Click:
    pt = kp.points[0]
    wpoint = _attr(kp, "wpoint")
    if wpoint is not None and all(abs(a - b) <= _EPS for a, b in zip(pt, wpoint)):
        x, y = _attr(kp, "px")
    else:
        x, y = pt[0] * w, pt[1] * h
    return Click(x, y, kp.label or "", int(_attr(kp, "round", 1) or 1),
                 _attr(kp, "source", "human") or "human")


def _detections(anns: Iterable[Annotation], w: int, h: int):
    import fiftyone as fo
    return fo.Detections(detections=[to_detection(a, w, h) for a in anns])


def _keypoints(clicks: Iterable[Click], w: int, h: int):
    import fiftyone as fo
    return fo.Keypoints(keypoints=[to_keypoint(c, w, h) for c in clicks])


def absorb_new_clicks(sample, w: int, h: int, source: str = "human") -> int:
    """Turn boxes drawn in `new_clicks` into clicks of the next round; returns how many."""
    drawn = sample[NEW_CLICKS].detections if sample[NEW_CLICKS] else []
    if not drawn:
        return 0
    import fiftyone as fo
    kps = list(sample[CLICKS].keypoints) if sample[CLICKS] else []
    rnd = max((int(_attr(k, "round", 1) or 1) for k in kps), default=0) + 1
    for det in drawn:
        x, y, bw, bh = det.bounding_box
        kps.append(to_keypoint(Click((x + bw / 2) * w, (y + bh / 2) * h, det.label or "",
                                     rnd, source), w, h))
    sample[CLICKS] = fo.Keypoints(keypoints=kps)
    sample[NEW_CLICKS] = fo.Detections()
    return len(drawn)


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
        if is_new or sample["review_status"] is None:
            sample["review_status"] = "todo"
        if rec.id in gt_by_id:
            sample[GROUND_TRUTH] = _detections(gt_by_id[rec.id].annotations, w, h)
        # what annotators and "Refine with clicks" changed stays, unless `refill`
        if refill or is_new or sample[PREDICTIONS] is None:
            sample[PREDICTIONS] = _detections(item.annotations, w, h)
        if refill or is_new or sample[CORRECTIONS] is None:
            sample[CORRECTIONS] = _detections(item.annotations, w, h)
        if refill or is_new or sample[CLICKS] is None:
            sample[CLICKS] = _keypoints(clicks_by_id.get(rec.id, item.clicks), w, h)
        if is_new:
            sample[NEW_CLICKS] = fo.Detections()

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
        sample[PREDICTIONS] = _detections(item.annotations, w, h)
        sample[CORRECTIONS] = _detections(item.annotations, w, h)
        sample[CLICKS] = _keypoints(clicks_by_id.get(item.id, item.clicks), w, h)
        sample[NEW_CLICKS] = fo.Detections()
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
    dets = sample[CORRECTIONS].detections if sample[CORRECTIONS] else []
    for det in dets:
        ann = from_detection(det, w, h)
        why = None
        if ann.category not in classes:
            why = (f"box {_fmt(ann.box)} has unknown class {ann.category!r}",
                   f"pick one of {', '.join(classes)} in the Annotate tab")
        else:
            bad = ann.box.problem(w, h)
            if bad:
                why = (bad, "redraw the box inside the image or delete it")
        if why:
            problems.append(Problem(rec.id, *why))
        else:
            anns.append(ann)
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
    return ImageLabels(rec, anns, list(template.ignore), clicks), problems


def _fmt(box: Box) -> str:
    return "[" + ", ".join(f"{v:.1f}" for v in box.xyxy()) + "]"


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
        {"image_id": 1, "tags": 1, "problems": 1, CORRECTIONS: 1, CLICKS: 1, NEW_CLICKS: 1,
         PREDICTIONS: 1})
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
    label = property(lambda self: self.d.get("label"))
    bounding_box = property(lambda self: self.d.get("bounding_box"))
    confidence = property(lambda self: self.d.get("confidence"))
    points = property(lambda self: self.d.get("points"))


class _RawList:
    def __init__(self, items: list[dict]):
        self.detections = self.keypoints = [RawLabel(i) for i in items]


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
        return _RawList(value.get("detections", value.get("keypoints", [])) or [])


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
    """Show `predictions` in `predictions`; in `corrections`, keep every box a person owns
    (`is_human_owned`) exactly as it is and put the predictions a refresh adds
    (`predictions_to_add`: clipped to the image, none on a kept box) instead of the others.
    Returns (boxes replaced, boxes kept). The sample is not saved."""
    import fiftyone as fo
    dets = sample[CORRECTIONS].detections if sample[CORRECTIONS] else []
    kept = [d for d in dets if is_human_owned(from_detection(d, w, h))]
    added = predictions_to_add(predictions, [from_detection(d, w, h) for d in kept], w, h)
    added = [replace(a, id=new_annotation_id()) for a in added]
    sample[PREDICTIONS] = _detections(predictions, w, h)
    sample[CORRECTIONS] = fo.Detections(
        detections=kept + [to_detection(a, w, h) for a in added])
    return len(dets) - len(kept), len(kept)


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
    try:
        from flows.human_wait import signal_done
    except ImportError:  # the flow side is optional: the marker is what counts
        from tinyloop.atomic import write_text_atomic
        write_text_atomic(ProjectLayout(project_root).done_marker(batch), "done\n")
        return False
    return bool(signal_done(project_root, batch))
