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
- `batch`, `order_position`, `review_status` (todo | done), `review_priority` (higher =
  review first), `problems` (why the last pull refused this sample) and the sample tag
  `needs-fix` while problems remain.

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
ORIENTED_SUFFIX = "_oriented"
_EPS = 1e-9


def oriented(field: str) -> str:
    """The Polylines field that shows the oriented boxes of the Detections field `field`."""
    return field + ORIENTED_SUFFIX


OBJECT_FIELDS = (GROUND_TRUTH, PREDICTIONS, CORRECTIONS)  # detections + oriented polylines


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
        ds = fo.load_dataset(name)
        _add_oriented_fields(ds)
        return ds
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
    _add_oriented_fields(ds)
    ds.create_index("image_id", unique=True)
    return ds


def _add_oriented_fields(ds) -> None:
    """The Polylines fields; also on datasets created before oriented boxes were shown."""
    import fiftyone as fo
    for name in OBJECT_FIELDS:
        if not ds.has_sample_field(oriented(name)):
            ds.add_sample_field(oriented(name), fo.EmbeddedDocumentField,
                                embedded_doc_type=fo.Polylines)


def set_annotation_schemas(ds, classes: list[str]) -> None:
    """Label schemas that make `corrections`, its oriented polylines and `new_clicks`
    editable in the Annotate tab."""
    schemas = {}
    editable = [CORRECTIONS, oriented(CORRECTIONS), NEW_CLICKS]
    for name in editable:
        schema = ds.generate_label_schemas(name, scan_samples=False)
        schema["classes"] = list(classes)
        schema["component"] = "dropdown"
        schemas[name] = schema
    ds.set_label_schemas(schemas)
    ds.activate_label_schemas(editable)


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
    return box_unchanged(det) and _attr(det, "wlabel") == det.label


def box_unchanged(det) -> bool:
    """True when the detection's box still is where tinyloop wrote it (maybe relabelled)."""
    wbox = _attr(det, "wbox")
    if wbox is None or det.bounding_box is None or _attr(det, "px") is None:
        return False
    return all(abs(a - b) <= _EPS for a, b in zip(det.bounding_box, wbox))


def _attr(det, name, default=None):
    return det.get_field(name) if det.has_field(name) else default


def from_detection(det, w: int, h: int) -> Annotation:
    """The Annotation a correction detection stands for (before validity checks)."""
    if box_unchanged(det):  # exact pixels back, not relative coordinates times the size
        box = Box(*_attr(det, "px"))
        obox = OrientedBox(*_attr(det, "obox")) if _attr(det, "obox") else None
    else:
        x, y, bw, bh = det.bounding_box or [0.0, 0.0, 0.0, 0.0]
        box = Box(x * w, y * h, (x + bw) * w, (y + bh) * h)
        obox = None  # an oriented box written with the old box no longer fits the new one
    edited = bool(_attr(det, "edited", False)) if unchanged(det) else True
    source = _attr(det, "source")
    if source is None:  # drawn in the App
        prov = Provenance("human")
    else:
        score = det.confidence if source in MODEL_SOURCES else None
        prov = Provenance(source, _attr(det, "model_version"), score,
                          edited if source != "human" else False)
    return Annotation(det.label or "", box, obox, prov, bool(_attr(det, "difficult", False)),
                      _attr(det, "uid") or det.id)


# --- oriented boxes as polylines ----------------------------------------------------------
def to_polyline(ann: Annotation, w: int, h: int):
    """The oriented box of `ann` as a closed 4-point Polyline (relative coordinates) that
    remembers what was written (`wlabel`, `wpoints`, the exact pixel `obox`); None without
    an oriented box. Carries the detection's `uid` and provenance: the pair is one object,
    and a polyline whose detection is deleted still knows where it came from."""
    import fiftyone as fo
    if ann.obox is None:
        return None
    pts = [[x / w, y / h] for x, y in ann.obox.corners()]
    p = ann.provenance
    return fo.Polyline(label=ann.category, points=[pts], closed=True, filled=False,
                       confidence=p.score, uid=ann.id, source=p.source,
                       model_version=p.model_version, edited=p.edited,
                       difficult=ann.difficult, wpoints=[list(pt) for pt in pts],
                       wlabel=ann.category, obox=ann.obox.as_list())


def polyline_unchanged(poly) -> bool:
    """True when the polyline still is what tinyloop wrote (no one moved or relabelled it)."""
    wpoints, points = _attr(poly, "wpoints"), poly.points
    if wpoints is None or _attr(poly, "wlabel") != poly.label or not points \
            or len(points) != 1 or len(points[0]) != len(wpoints):
        return False
    return all(abs(a - b) <= _EPS for p, q in zip(points[0], wpoints) for a, b in zip(p, q))


class PolylineError(ValueError):
    """A polyline that is no oriented box: (message, fix) for the annotator."""


def polyline_shape(poly, w: int, h: int) -> tuple[OrientedBox, Box, tuple]:
    """(oriented box, its polygon's bounding box, the pixel corners) of an edited polyline:
    the minimum-area rectangle around its 4 points. PolylineError when it has another
    number of points, crossing edges or no area."""
    from shapely.geometry import MultiPoint, Polygon
    shapes = poly.points or []
    pts = [tuple(p) for p in (shapes[0] if len(shapes) == 1 else [])]
    if len(pts) == 5 and _same_point(pts[0], pts[-1]):
        pts = pts[:4]  # a ring written closed repeats its first point
    corners = tuple((x * w, y * h) for x, y in pts)
    what = f"oriented box (polyline {poly.label!r}"
    if len(shapes) != 1 or len(corners) != 4:
        n = sum(len(s) for s in shapes)
        raise PolylineError(f"{what}, {len(shapes)} shape(s)) has {n} points, not 4",
                            "drag its corners so one shape has exactly 4 points, or delete "
                            "the polyline (the box stays axis-aligned)")
    where = f"{what} at {_fmt(_bounds(corners))})"
    if MultiPoint(corners).convex_hull.area <= _EPS:  # on one line or one point
        raise PolylineError(f"{where} encloses no area",
                            "spread its 4 corners around the object, or delete the polyline")
    if not Polygon(corners).is_valid:  # a bow tie: two corners swapped
        raise PolylineError(f"{where} has crossing edges",
                            "move the corners so they go around the object in order")
    return OrientedBox.from_corners(list(corners)), _bounds(corners), corners


def _same_point(a, b) -> bool:
    return all(abs(u - v) <= _EPS for u, v in zip(a, b))


def _bounds(corners) -> Box:
    xs, ys = zip(*corners)
    return Box(min(xs), min(ys), max(xs), max(ys))


def _label_key(label) -> str:
    """What links a detection to its polyline: tinyloop's `uid`, else the FiftyOne
    instance both share, else the label's own id (an unlinked label is its own object)."""
    return _attr(label, "uid") or getattr(label, "instance_id", None) or label.id


def _as_edited(ann: Annotation) -> Annotation:
    """`ann` after a person changed it (a human-made box stays plain human)."""
    if ann.provenance.source == "human":
        return ann
    return replace(ann, provenance=replace(ann.provenance, edited=True))


@dataclass
class LabelObject:
    """One object of a sample: its detection and polyline (either may be missing) and the
    Annotation they stand for, or `problem` = (message, fix) when they are no label.
    `owned`: a person made or touched it, so a model refresh keeps it as it is."""
    det: object | None
    poly: object | None
    ann: Annotation | None = None
    problem: tuple[str, str] | None = None

    @property
    def owned(self) -> bool:
        return self.problem is not None or is_human_owned(self.ann)


def read_objects(sample, field: str, w: int, h: int) -> list[LabelObject]:
    """The objects of the Detections field `field` and its oriented Polylines, detections'
    order first, then polylines without a detection.

    - detection only: `from_detection`; if tinyloop wrote it with an oriented box and the
      sample has polylines, the annotator deleted the polyline: the box stays, axis-aligned;
    - both unchanged: `from_detection` (exact pixels and oriented box);
    - polyline edited: its minimum-area rectangle is the oriented box and its bounding box
      the box (a polyline that is no rectangle is a `problem`);
    - polyline without detection: a new oriented object when drawn or edited in the App;
      dropped when unchanged (the annotator deleted the object's detection).
    Samples synced before polylines existed (field unset) read as detections only.
    """
    polys_field = _field(sample, oriented(field))
    polys = {}
    for poly in (polys_field.polylines if polys_field else []):
        key = _label_key(poly)  # a second polyline of one object is an object of its own
        polys[key if key not in polys else poly.id] = poly
    dets = _field(sample, field)
    objects = [_object(det, polys.pop(_label_key(det), None), polys_field is None, w, h)
               for det in (dets.detections if dets else [])]
    objects += [_object(None, poly, False, w, h) for poly in polys.values()]
    return [o for o in objects if o.ann is not None or o.problem is not None]


def _object(det, poly, legacy: bool, w: int, h: int) -> LabelObject:
    obj = LabelObject(det, poly)
    if poly is None:
        obj.ann = from_detection(det, w, h)
        if obj.ann.obox is not None and not legacy:  # the annotator deleted the polyline
            obj.ann = _as_edited(replace(obj.ann, obox=None))
        return obj
    if polyline_unchanged(poly):
        # with its detection: as the detection says (an edited detection has dropped the
        # oriented box, which no longer fits it); alone: deleted with its detection
        obj.ann = from_detection(det, w, h) if det is not None else None
        return obj
    try:
        obox, box, corners = polyline_shape(poly, w, h)
    except PolylineError as e:
        obj.problem = (str(e.args[0]), str(e.args[1]))
        return obj
    # provenance, id and class as the detection says; a lone polyline carries the same
    # attributes (its box is replaced by the polyline's below)
    base = from_detection(det if det is not None else poly, w, h)
    label = poly.label if poly.label != _attr(poly, "wlabel") else base.category
    obj.ann = _as_edited(replace(base, category=label or "", box=box, obox=obox,
                                 polygon=corners))
    return obj


def _field(sample, name: str):
    """`sample[name]`, or None where the dataset has no such field (older datasets)."""
    try:
        return sample[name]
    except (KeyError, AttributeError):
        return None


def set_objects(sample, field: str, anns: list[Annotation], w: int, h: int) -> None:
    """Write `anns` as the Detections of `field` and their oriented boxes as the Polylines
    of `oriented(field)`."""
    dets = _detections(anns, w, h).detections
    put_objects(sample, field, dets, _linked_polylines(anns, dets, w, h))


def put_objects(sample, field: str, dets: list, polys: list) -> None:
    """Set the Detections of `field` and the Polylines of `oriented(field)` (FiftyOne
    labels, linked already)."""
    import fiftyone as fo
    sample[field] = fo.Detections(detections=list(dets))
    sample[oriented(field)] = fo.Polylines(polylines=list(polys))


def _linked_polylines(anns: list[Annotation], dets: list, w: int, h: int) -> list:
    """The polylines of the oriented `anns`; each shares one fo.Instance with its detection
    (`dets[i]` is `anns[i]`'s), so the App knows the pair as one object."""
    import fiftyone as fo
    polys = []
    for ann, det in zip(anns, dets):
        poly = to_polyline(ann, w, h)
        if poly is not None:
            det.instance = poly.instance = fo.Instance()
            polys.append(poly)
    return polys


def _backfill_polylines(sample, field: str, w: int, h: int) -> None:
    """Give a sample synced before polylines existed the polylines of its oriented
    detections (edited boxes have no oriented box left), so the annotator sees them."""
    import fiftyone as fo
    if _field(sample, oriented(field)) is not None or sample[field] is None:
        return
    dets = sample[field].detections
    polys = _linked_polylines([from_detection(d, w, h) for d in dets], dets, w, h)
    sample[oriented(field)] = fo.Polylines(polylines=polys)


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
            set_objects(sample, GROUND_TRUTH, gt_by_id[rec.id].annotations, w, h)
        # what annotators and "Refine with clicks" changed stays, unless `refill`
        for name in (PREDICTIONS, CORRECTIONS):
            if refill or is_new or sample[name] is None:
                set_objects(sample, name, item.annotations, w, h)
            else:
                _backfill_polylines(sample, name, w, h)
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
        set_objects(sample, PREDICTIONS, item.annotations, w, h)
        set_objects(sample, CORRECTIONS, item.annotations, w, h)
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
    return ImageLabels(rec, anns, list(template.ignore), clicks), problems


def _label_problem(ann: Annotation, classes: list[str], w: int, h: int
                   ) -> tuple[str, str] | None:
    """(message, fix) when `ann` cannot be a label: unknown class, bad box."""
    if ann.category not in classes:
        return (f"box {_fmt(ann.box)} has unknown class {ann.category!r}",
                f"pick one of {', '.join(classes)} in the Annotate tab")
    bad = ann.box.problem(w, h)
    return (bad, "redraw the box inside the image or delete it") if bad else None


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
        {"image_id": 1, "tags": 1, "problems": 1, CORRECTIONS: 1, oriented(CORRECTIONS): 1,
         CLICKS: 1, NEW_CLICKS: 1, PREDICTIONS: 1})
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
    _backfill_polylines(sample, CORRECTIONS, w, h)
    objects = read_objects(sample, CORRECTIONS, w, h)
    kept = [o for o in objects if o.owned]
    added = predictions_to_add(predictions, [o.ann for o in kept if o.ann], w, h)
    added = [replace(a, id=new_annotation_id()) for a in added]
    set_objects(sample, PREDICTIONS, predictions, w, h)
    new_dets = _detections(added, w, h).detections
    put_objects(sample, CORRECTIONS, [o.det for o in kept if o.det] + new_dets,
                [o.poly for o in kept if o.poly] + _linked_polylines(added, new_dets, w, h))
    return len(objects) - len(kept), len(kept)


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
