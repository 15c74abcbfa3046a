"""Annotations <-> FiftyOne labels: boxes as Detections, oriented boxes as linked 4-point
Polylines (and how an edited polyline becomes the object's oriented box), clicks as
Keypoints; each label remembers what tinyloop wrote, so an edit is recognised
(fiftyone_sync.py's docstring states the rule)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable

from tinyloop.annotations import Annotation, Box, Click, OrientedBox, Provenance
from flows.annotate.annotation_store import MODEL_SOURCES, is_human_owned
from flows.annotate.fiftyone_schema import (CLICKS, NEW_CLICKS, _EPS, oriented)

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
    where = f"{what} at {fmt_box(_bounds(corners))})"
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
    dets = detections_of(anns, w, h).detections
    put_objects(sample, field, dets, linked_polylines(anns, dets, w, h))


def put_objects(sample, field: str, dets: list, polys: list) -> None:
    """Set the Detections of `field` and the Polylines of `oriented(field)` (FiftyOne
    labels, linked already)."""
    import fiftyone as fo
    sample[field] = fo.Detections(detections=list(dets))
    sample[oriented(field)] = fo.Polylines(polylines=list(polys))


def linked_polylines(anns: list[Annotation], dets: list, w: int, h: int) -> list:
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


def backfill_polylines(sample, field: str, w: int, h: int) -> None:
    """Give a sample synced before polylines existed the polylines of its oriented
    detections (edited boxes have no oriented box left), so the annotator sees them."""
    import fiftyone as fo
    if _field(sample, oriented(field)) is not None or sample[field] is None:
        return
    dets = sample[field].detections
    polys = linked_polylines([from_detection(d, w, h) for d in dets], dets, w, h)
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


def detections_of(anns: Iterable[Annotation], w: int, h: int):
    import fiftyone as fo
    return fo.Detections(detections=[to_detection(a, w, h) for a in anns])


def keypoints_of(clicks: Iterable[Click], w: int, h: int):
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


def fmt_box(box: Box) -> str:
    return "[" + ", ".join(f"{v:.1f}" for v in box.xyxy()) + "]"
