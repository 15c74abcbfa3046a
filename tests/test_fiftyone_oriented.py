"""Oriented boxes in the FiftyOne App: each one shown as a polyline linked to its detection,
edits of the polyline pulled back as the object's oriented box, on a real MongoDB and real
HIT-UAV images whose labels_rotated/ hold turned cars and people."""
from __future__ import annotations

import base64
import math
from dataclasses import replace

import pytest

from tests.fixtures_fiftyone import make_oriented_project, same_rectangle, unique_name
from tinyloop.annotations import Annotation, Box, Click, OrientedBox, Provenance

pytestmark = pytest.mark.mongo

CARS, PEOPLE, MIXED = "0_120_40_0_05359", "0_70_70_0_02011", "0_130_80_0_05688"
CORRECTIONS_ORIENTED = "corrections_oriented"


@pytest.fixture
def project(tmp_path, mongo_uri):
    from flows.annotate import fiftyone_convert as fconvert, fiftyone_refine as frefine
    from flows.annotate import fiftyone_sync as fsync
    images_dir, pre = make_oriented_project(tmp_path)
    name = unique_name("oriented")
    ds = fsync.sync_batch(tmp_path, 1, name, images_dir)
    yield tmp_path, pre, ds, name
    ds.delete()


def _sample(ds, image_id: str):
    from fiftyone import ViewField as F
    return ds.one(F("image_id") == image_id)


def _pixels(poly, w: int = 640, h: int = 512) -> list[tuple[float, float]]:
    return [(x * w, y * h) for x, y in poly.points[0]]


def _relative(corners, w: int = 640, h: int = 512) -> list[list[list[float]]]:
    return [[[x / w, y / h] for x, y in corners]]


def _turned(obox: OrientedBox, by: float) -> OrientedBox:
    return OrientedBox(obox.cx, obox.cy, obox.w, obox.h, obox.angle + by)


def _as_prediction(ann: Annotation, provenance: Provenance) -> Annotation:
    return replace(ann, id=None, provenance=provenance)


def _pulled(root, name, image_id: str) -> dict[str, Annotation]:
    from flows.annotate import fiftyone_convert as fconvert, fiftyone_refine as frefine
    from flows.annotate import fiftyone_sync as fsync
    labels = fsync.pull_batch(root, 1, name).labels.by_id()[image_id]
    return {a.id: a for a in labels.annotations}


def test_push_shows_every_oriented_box_as_a_polyline_linked_to_its_detection(project):
    from flows.annotate import fiftyone_convert as fconvert, fiftyone_refine as frefine
    from flows.annotate import fiftyone_sync as fsync
    from tinyloop.cocofile import read_labels
    root, pre, ds, name = project
    truth = read_labels(root / "data/pool/ground_truth.json").by_id()
    for item in pre:
        sample = _sample(ds, item.id)
        for field, anns in (("corrections", item.annotations), ("predictions", item.annotations),
                            ("ground_truth", truth[item.id].annotations)):
            dets = sample[field].detections
            polys = sample[fsync.oriented(field)].polylines
            assert len(polys) == len(dets) == len(anns) and all(a.obox for a in anns)
            for ann, det, poly in zip(anns, dets, polys):
                assert poly.label == det.label == ann.category and poly.closed
                assert poly.instance_id is not None and poly.instance_id == det.instance_id
                assert poly["uid"] == det["uid"] == ann.id
                for p, q in zip(_pixels(poly), ann.obox.corners()):
                    assert math.dist(p, q) < 1e-9
    assert CORRECTIONS_ORIENTED in ds.active_label_schemas
    assert ds.label_schemas[CORRECTIONS_ORIENTED]["classes"] == pre.categories


def test_untouched_oriented_boxes_come_back_exactly(project):
    from flows.annotate import fiftyone_convert as fconvert, fiftyone_refine as frefine
    from flows.annotate import fiftyone_sync as fsync
    root, pre, ds, name = project
    first = fsync.pull_batch(root, 1, name)
    for got, item in zip(first.labels, pre):
        assert got.annotations == item.annotations  # same floats, not 1e-13 px away
    assert fsync.pull_batch(root, 1, name).path.read_bytes() == first.path.read_bytes()


def _turn_first_car(ds, pre, by: float) -> tuple[Annotation, OrientedBox]:
    """What an annotator does in the App: turn the first car's polyline by `by` radians."""
    car = pre.by_id()[CARS].annotations[0]
    target = _turned(car.obox, by)
    sample = _sample(ds, CARS)
    sample[CORRECTIONS_ORIENTED].polylines[0].points = _relative(target.corners())
    sample.save()
    return car, target


def test_a_rotated_polyline_is_pulled_as_the_rotated_oriented_box(project):
    root, pre, ds, name = project
    car, target = _turn_first_car(ds, pre, 1.2)
    got = _pulled(root, name, CARS)
    turned = got[car.id]
    assert same_rectangle(turned.obox, target)
    xs, ys = zip(*target.corners())
    assert turned.box.iou(Box(min(xs), min(ys), max(xs), max(ys))) > 1 - 1e-9
    assert turned.category == "Car" and turned.provenance == Provenance(
        "model", "iter-000", 0.8, edited=True)
    others = pre.by_id()[CARS].annotations[1:]
    assert [got[a.id] for a in others] == others  # untouched, exactly


def test_a_rotated_polyline_is_a_moved_box_in_the_oriented_workload(project):
    import inspect
    from flows.accounting.workload import diff_batch
    from flows.annotate import fiftyone_convert as fconvert, fiftyone_refine as frefine
    from flows.annotate import fiftyone_sync as fsync
    if "geometry" not in inspect.signature(diff_batch).parameters:
        pytest.skip("flows/accounting/workload.py has no oriented matching yet (#15)")
    root, pre, ds, name = project
    _turn_first_car(ds, pre, 1.2)  # oriented IoU 0.39, axis-aligned IoU 0.97
    labels = fsync.pull_batch(root, 1, name).labels
    n = len(pre.by_id()[CARS].annotations)
    by_box = {d.image_id: d for d in diff_batch(pre, labels, geometry="box").images}[CARS]
    assert (by_box.accepted, by_box.moved) == (n, 0)  # the turn is invisible to it
    turned = {d.image_id: d for d in diff_batch(pre, labels, geometry="oriented").images}[CARS]
    assert (turned.accepted, turned.moved, turned.added, turned.deleted) == (n - 1, 1, 0, 0)


def test_bad_polylines_are_problems_for_their_image_only(project):
    from flows.annotate import fiftyone_convert as fconvert, fiftyone_refine as frefine
    from flows.annotate import fiftyone_sync as fsync
    from flows.annotate.fiftyone_store import FiftyOneStore
    from tinyloop.annotations import AnnotationError
    root, pre, ds, name = project
    sample = _sample(ds, PEOPLE)
    polys = sample[CORRECTIONS_ORIENTED].polylines
    a, b, c, d = _pixels(polys[0])
    polys[0].points = _relative([a, b, c, d, ((a[0] + b[0]) / 2, a[1] - 5)])  # a 5th point
    a, b, c, d = _pixels(polys[1])
    polys[1].points = _relative([a, c, b, d])                                 # edges cross
    a, b, c, d = _pixels(polys[2])
    polys[2].points = _relative([a, b, a, b])                                 # no area
    sample.save()
    with pytest.raises(fsync.PullError) as err:
        fsync.pull_batch(root, 1, name)
    problems = err.value.problems
    assert [p.image for p in problems] == [PEOPLE] * 3
    assert "5 points, not 4" in problems[0].message and "exactly 4" in problems[0].fix
    assert "crossing edges" in problems[1].message and "in order" in problems[1].fix
    assert "no area" in problems[2].message
    assert not (root / "data/batches/001/labels.json").exists()
    # the rest of the batch is read as usual: only this image is flagged
    store = FiftyOneStore(root, name)
    for image in (CARS, MIXED):
        assert store.get_labels(image).annotations == pre.by_id()[image].annotations
        assert fsync.NEEDS_FIX not in _sample(ds, image).tags
    with pytest.raises(AnnotationError, match=PEOPLE):
        store.get_labels(PEOPLE)
    sample.reload()
    assert fsync.NEEDS_FIX in sample.tags and len(sample["problems"]) == 3
    # the annotator deletes the three polylines: the boxes stay, axis-aligned
    sample[CORRECTIONS_ORIENTED].polylines = sample[CORRECTIONS_ORIENTED].polylines[3:]
    sample.save()
    got = _pulled(root, name, PEOPLE)
    for ann in pre.by_id()[PEOPLE].annotations[:3]:
        assert got[ann.id].obox is None and got[ann.id].box == ann.box
        assert got[ann.id].provenance.edited
    sample.reload()
    assert fsync.NEEDS_FIX not in sample.tags and not sample["problems"]


def test_deleting_and_drawing_detections_and_polylines(project):
    import fiftyone as fo
    root, pre, ds, name = project
    anns = pre.by_id()[PEOPLE].annotations
    sample = _sample(ds, PEOPLE)
    dets, polys = sample["corrections"].detections, sample[CORRECTIONS_ORIENTED].polylines
    turned = _turned(anns[3].obox, 0.5)
    polys[3].points = _relative(turned.corners())
    dets[4].label = "Bicycle"                       # relabelled box, polyline untouched
    drawn = OrientedBox(100, 100, 12, 30, 0.3)
    new = fo.Polyline(label="Person", points=_relative(drawn.corners()), closed=True)
    sample["corrections"].detections = [dets[0], dets[4], dets[5]]   # 1, 2, 3 deleted
    sample[CORRECTIONS_ORIENTED].polylines = [p for k, p in enumerate(polys) if k != 0] + [new]
    sample.save()
    got = _pulled(root, name, PEOPLE)
    only_box = got[anns[0].id]                      # polyline deleted: box stays, axis-aligned
    assert only_box.box == anns[0].box and only_box.obox is None and only_box.provenance.edited
    assert anns[1].id not in got                    # both deleted: the object is gone
    assert anns[2].id not in got                    # box deleted, its untouched polyline too
    kept = got[anns[3].id]                          # box deleted, polyline edited: still there
    assert same_rectangle(kept.obox, turned) and kept.provenance.edited
    relabelled = got[anns[4].id]
    assert relabelled.category == "Bicycle" and relabelled.box == anns[4].box
    assert relabelled.obox == anns[4].obox and relabelled.provenance.edited
    assert got[anns[5].id] == anns[5]
    human = got[new.id]                             # a polyline drawn alone: a new object
    assert human.provenance == Provenance("human") and same_rectangle(human.obox, drawn)
    assert len(got) == 5


def test_refine_with_clicks_never_replaces_an_edited_polyline(project):
    from flows.annotate import fiftyone_convert as fconvert, fiftyone_refine as frefine
    from flows.annotate import fiftyone_sync as fsync
    root, pre, ds, name = project
    anns = pre.by_id()[CARS].annotations
    sample = _sample(ds, CARS)
    turned = _turned(anns[0].obox, 0.4)
    sample[CORRECTIONS_ORIENTED].polylines[0].points = _relative(turned.corners())
    sample.save()
    edited_points = _relative(turned.corners())
    refined = Provenance("click_refined", "iter-001", 0.9)
    far = OrientedBox(50, 450, 20, 40, 0.6)
    predictions = [_as_prediction(anns[0], refined),    # on the edited car: not added
                   Annotation("Car", far.bounding_box(), far, refined)]
    counts = frefine.refine_samples(ds, [sample.id], lambda path, clicks: predictions)
    assert counts == {"samples": 1, "replaced": len(anns) - 1, "kept": 1}
    sample.reload()
    polys = sample[CORRECTIONS_ORIENTED].polylines
    assert [[list(p) for p in polys[0].points[0]]] == edited_points  # as the annotator left it
    assert [p.label for p in polys] == ["Car", "Car"]
    assert len(sample["predictions_oriented"].polylines) == 2
    got = _pulled(root, name, CARS)
    assert same_rectangle(got[anns[0].id].obox, turned)
    new = [a for a in got.values() if a.id != anns[0].id]
    assert len(new) == 1 and new[0].obox == far and new[0].provenance == refined


def test_store_edit_racing_a_polyline_edit_keeps_the_annotators_rotation(project,
                                                                          monkeypatch):
    """A model refresh meets an annotator's polyline edit saved in between: the refresh's
    save is refused, it re-reads the sample and keeps the rotated car as human-owned."""
    from flows.annotate import fiftyone_store
    from flows.annotate.fiftyone_store import FiftyOneStore
    root, pre, ds, name = project
    anns = pre.by_id()[CARS].annotations
    turned = _turned(anns[0].obox, 0.3)
    real, raced = fiftyone_store.fconvert.detections_of, []

    def racing_detections(items, w, h):
        if not raced:  # the annotator saves a rotation between the refresh's read and save
            raced.append(1)
            sample = _sample(ds, CARS)
            sample.reload(hard=True)
            sample[CORRECTIONS_ORIENTED].polylines[0].points = _relative(turned.corners())
            sample.save()
        return real(items, w, h)

    monkeypatch.setattr(fiftyone_store.fconvert, "detections_of", racing_detections)
    refined = Provenance("click_refined", "iter-001", 0.9)
    after = FiftyOneStore(root, name).refresh_predictions(
        CARS, [_as_prediction(a, refined) for a in anns])
    assert raced
    by_id = {a.id: a for a in after}
    assert same_rectangle(by_id[anns[0].id].obox, turned)  # kept, not refreshed away
    assert sum(a.provenance == refined for a in after) == len(anns) - 1


def test_the_apps_save_route_edits_polylines_with_the_412_rule(project):
    """The App's own PATCH route (FiftyOne's server, in process) on a polyline's points:
    a stale save is refused (412), a fresh one lands and is pulled as the new box."""
    from starlette.testclient import TestClient
    from fiftyone.server.app import app
    from flows.annotate.fiftyone_store import FiftyOneStore
    root, pre, ds, name = project
    car = pre.by_id()[MIXED].annotations[1]
    sample = _sample(ds, MIXED)
    stale = _etag(sample)
    store = FiftyOneStore(root, name)
    store.add_click(MIXED, Click(320, 256, "Car", 2))   # someone saves after the App read
    turned = _turned(car.obox, -0.35)
    ops = [{"op": "replace", "path": f"/{CORRECTIONS_ORIENTED}/polylines/1/points",
            "value": _relative(turned.corners())}]
    server = TestClient(app)
    url = f"/dataset/{ds._doc.id}/sample/{sample.id}"
    headers = {"Content-Type": "application/json-patch+json"}
    r = server.patch(url, json=ops, headers={**headers, "If-Match": stale})
    assert r.status_code == 412
    fresh = r.headers["ETag"].strip('"').removeprefix("W/").strip('"')
    r = server.patch(url, json=ops, headers={**headers, "If-Match": fresh})
    assert r.status_code == 200, r.text
    got = _pulled(root, name, MIXED)
    assert same_rectangle(got[car.id].obox, turned) and got[car.id].provenance.edited


def _etag(sample) -> str:
    return base64.b64encode(sample.last_modified_at.isoformat().encode()).decode()


def test_restart_batch_puts_the_polylines_back(project):
    from flows.annotate import fiftyone_convert as fconvert, fiftyone_refine as frefine
    from flows.annotate import fiftyone_sync as fsync
    root, pre, ds, name = project
    sample = _sample(ds, CARS)
    sample[CORRECTIONS_ORIENTED].polylines[0].points = _relative(
        _turned(pre.by_id()[CARS].annotations[0].obox, 1.0).corners())
    sample["corrections"].detections = sample["corrections"].detections[1:]
    sample.save()
    assert fsync.restart_batch(root, 1, name) == len(pre)
    for got, item in zip(fsync.pull_batch(root, 1, name).labels, pre):
        assert got.annotations == item.annotations


def test_a_sample_synced_before_polylines_keeps_its_oriented_boxes(project):
    """Datasets synced by an older tinyloop have no polylines: the oriented boxes come
    from the detections as before, and a re-sync shows them as polylines."""
    from flows.annotate import fiftyone_convert as fconvert, fiftyone_refine as frefine
    from flows.annotate import fiftyone_sync as fsync
    from tests.fixtures_fiftyone import SAMPLE
    root, pre, ds, name = project
    ds.set_values(CORRECTIONS_ORIENTED, [None] * len(ds))
    for got, item in zip(fsync.pull_batch(root, 1, name).labels, pre):
        assert got.annotations == item.annotations
    fsync.sync_batch(root, 1, name, SAMPLE)
    sample = _sample(ds, CARS)
    for ann, poly in zip(pre.by_id()[CARS].annotations, sample[CORRECTIONS_ORIENTED].polylines):
        assert all(math.dist(p, q) < 1e-9 for p, q in zip(_pixels(poly), ann.obox.corners()))
    for got, item in zip(fsync.pull_batch(root, 1, name).labels, pre):
        assert got.annotations == item.annotations
