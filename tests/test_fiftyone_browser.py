"""The real App in headless Chromium, Annotate tab: draw a box, relabel another and delete a
third; drag a corner of an oriented box's polyline and relabel another polyline; pull, find
every edit in labels.json. Needs Debian's `chromium` (/usr/bin/chromium) and Playwright;
screenshots of each step go to $TMPDIR/tinyloop-browser/ for debugging."""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.fixtures_fiftyone import (ORIENTED_IMAGES, make_project, same_rectangle,
                                     unique_name)
from tinyloop.cocofile import read_labels

CHROMIUM = os.environ.get("TINYLOOP_CHROMIUM", "/usr/bin/chromium")
pytestmark = [pytest.mark.mongo, pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason=f"{CHROMIUM} missing: apt-get install -y chromium")]
SHOTS = Path(tempfile.gettempdir()) / "tinyloop-browser"
TIMEOUT_MS = 120_000  # the App's first render is slow on 2 busy cores
ORIENTED_CARS = ORIENTED_IMAGES[0]  # five turned cars
CANVAS = '[data-cy="lighter-sample-renderer-canvas"]'


def _label_option(page, label: str) -> None:
    """Choose `label` in the open detection's label combobox (headless-ui: ArrowDown opens)."""
    combo = page.locator('[data-cy="root_label_container"] input[role="combobox"]')
    combo.click(timeout=TIMEOUT_MS)
    combo.press("ArrowDown")
    with page.expect_response(lambda r: r.request.method == "PATCH",
                              timeout=TIMEOUT_MS) as saved:
        page.get_by_role("option", name=label, exact=True).click(timeout=TIMEOUT_MS)
    assert saved.value.status == 200, saved.value.text()


@contextlib.contextmanager
def annotate_tab(info: dict, sample, shots: Path):
    """The App in headless Chromium on `sample`, its Annotate tab open: yields the page.
    A failure leaves shots/failure.png."""
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        try:
            page.goto(f"{info['url']}?id={sample.id}", wait_until="load")
            annotate = page.locator('[data-cy="annotate"]')
            annotate.wait_for()
            time.sleep(5)  # the modal re-renders once after load
            annotate.click(force=True)
            page.locator(CANVAS).wait_for()
            page.screenshot(path=shots / "1-annotate-tab.png")
            yield page
        except Exception:
            page.screenshot(path=shots / "failure.png")
            raise
        finally:
            browser.close()


def _drag_and_save(page, start: tuple[float, float], by: tuple[float, float]) -> None:
    """Press at `start` (page px), move by `by` in 10 steps, release; the App must save it."""
    (x0, y0), (dx, dy) = start, by
    with page.expect_response(lambda r: r.request.method == "PATCH") as saved:
        page.mouse.move(x0, y0)
        page.mouse.down()
        for k in range(1, 11):
            page.mouse.move(x0 + dx * k / 10, y0 + dy * k / 10)
        page.mouse.up()
    assert saved.value.status == 200, saved.value.text()


def _on_page(page, x: float, y: float, w: int = 640, h: int = 512) -> tuple[float, float]:
    """Page px of image px (x, y): the App fits the image into its canvas, centred."""
    bb = page.locator(CANVAS).bounding_box()
    s = min(bb["width"] / w, bb["height"] / h)
    return (bb["x"] + (bb["width"] - s * w) / 2 + s * x,
            bb["y"] + (bb["height"] - s * h) / 2 + s * y)


def test_draw_and_relabel_in_the_annotate_tab_then_pull(tmp_path, mongo_uri):
    from flows.annotate import app as fapp
    from flows.annotate import fiftyone_sync as fsync
    from flows.annotate.mongo import free_port
    images_dir, pre = make_project(tmp_path, n_images=1)
    name = unique_name("browser")
    ds = fsync.sync_batch(tmp_path, 1, name, images_dir)
    sample = ds.first()
    person = sample["corrections"].detections[1]  # the model's "Person" box, id a01
    doomed = sample["corrections"].detections[2]  # the model's low-score "Car", id a02
    assert person.label == "Person" and doomed.label == "Car"
    info = fapp.start_app(tmp_path, port=free_port(), dataset=name, uri=mongo_uri)
    try:
        shots = SHOTS / "boxes"
        with annotate_tab(info, sample, shots) as page:
            # draw a new box (in an empty area of the image) and call it OtherVehicle
            page.locator('[data-cy="detection-mode"]').click()
            bb = page.locator(CANVAS).bounding_box()
            x0, y0 = bb["x"] + bb["width"] * 0.7, bb["y"] + bb["height"] * 0.25
            _drag_and_save(page, (x0, y0), (60, 40))
            page.screenshot(path=shots / "2-drawn.png")
            _label_option(page, "OtherVehicle")
            page.screenshot(path=shots / "3-drawn-relabelled.png")
            # relabel the model's Person box as Bicycle
            page.locator('[data-cy="annotate-edit-back"]').click()
            page.locator(f'[data-cy="annotate-label-{person.id}"]').click()
            _label_option(page, "Bicycle")
            page.screenshot(path=shots / "4-relabelled.png")
            # delete the low-score Car: select it, press Delete
            page.locator('[data-cy="annotate-edit-back"]').click()
            page.locator(f'[data-cy="annotate-label-{doomed.id}"]').click()
            with page.expect_response(lambda r: r.request.method == "PATCH") as deleted:
                page.keyboard.press("Delete")
            assert deleted.value.status == 200, deleted.value.text()
            page.screenshot(path=shots / "5-deleted.png")
        labels = fsync.pull_batch(tmp_path, 1, name).labels
        written = read_labels(tmp_path / "data/batches/001/labels.json")
        assert written.images == labels.images
        anns = written.images[0].annotations
        by_id = {a.id: a for a in anns}
        assert by_id["a01"].category == "Bicycle" and by_id["a01"].provenance.edited
        drawn_boxes = [a for a in anns if a.provenance.source == "human"]
        assert len(drawn_boxes) == 1 and drawn_boxes[0].category == "OtherVehicle"
        box = drawn_boxes[0].box
        assert 0.6 * 640 < box.x1 < 0.8 * 640 and box.width > 5 and box.height > 5
        assert "a02" not in by_id  # deleted
        assert len(anns) == 3  # Car a00 untouched, Bicycle a01, the drawn OtherVehicle
        assert not by_id["a00"].provenance.edited
        # the plugin's "Mark batch done", executed by the running App server
        import json
        import urllib.request
        req = urllib.request.Request(
            f"http://{info['address']}:{info['port']}/operators/execute",
            data=json.dumps({"operator_uri": "@tinyloop/annotate/mark_batch_done",
                             "dataset_name": name, "params": {"batch": 1}}).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=120) as r:
            out = json.loads(r.read())
        assert out["error"] is None and out["result"]["batch"] == 1, out
        assert (tmp_path / "data/batches/001/done").exists()
    finally:
        fapp.stop_app(tmp_path, stop_mongo=False)
        ds.delete()


def test_drag_a_corner_and_relabel_an_oriented_polyline_then_pull(tmp_path, mongo_uri):
    """An annotator fixes oriented boxes in the App: drags one corner of a car's polyline
    outwards and relabels another car's polyline; the pull turns the first into the
    minimum-area rectangle around the moved corners and keeps the second's rectangle."""
    from fiftyone import ViewField as F
    from flows.annotate import app as fapp
    from flows.annotate import fiftyone_sync as fsync
    from flows.annotate.mongo import free_port
    from shapely.geometry import Point, Polygon
    from tests.fixtures_fiftyone import make_oriented_project
    images_dir, pre = make_oriented_project(tmp_path)
    cars = pre.by_id()[ORIENTED_CARS].annotations
    name = unique_name("browser-obb")
    ds = fsync.sync_batch(tmp_path, 1, name, images_dir)
    sample = ds.one(F("image_id") == ORIENTED_CARS)
    polys = {p["uid"]: p for p in sample[fsync.oriented("corrections")].polylines}
    stretched, relabelled = cars[2], cars[0]
    corner = max(stretched.obox.corners())  # the right-most corner, dragged further right
    info = fapp.start_app(tmp_path, port=free_port(), dataset=name, uri=mongo_uri)
    try:
        shots = SHOTS / "polylines"
        with annotate_tab(info, sample, shots) as page:
            page.locator(f'[data-cy="annotate-label-{polys[stretched.id].id}"]').click()
            page.screenshot(path=shots / "2-selected.png")
            start = _on_page(page, *corner)
            dx = _on_page(page, corner[0] + 16, corner[1])[0] - start[0]  # 16 image px
            _drag_and_save(page, start, (dx, 0))
            page.screenshot(path=shots / "3-corner-dragged.png")
            page.locator('[data-cy="annotate-edit-back"]').click()
            page.locator(f'[data-cy="annotate-label-{polys[relabelled.id].id}"]').click()
            _label_option(page, "Bicycle")
            page.screenshot(path=shots / "4-relabelled.png")
    finally:
        fapp.stop_app(tmp_path, stop_mongo=False)
    try:
        got = {a.id: a for a in fsync.pull_batch(tmp_path, 1, name).labels
               .by_id()[ORIENTED_CARS].annotations}
        moved = (corner[0] + 16, corner[1])
        s = got[stretched.id]
        assert s.provenance.edited and s.category == "Car"
        assert min(math.dist(moved, q) for q in s.polygon) < 1.5  # where the mouse let go
        left = min(x for x, _ in stretched.obox.corners())  # the other corners stay
        assert abs(s.box.x2 - moved[0]) < 1.5 and abs(s.box.x1 - left) < 1e-6
        assert s.obox.w * s.obox.h > stretched.obox.w * stretched.obox.h  # a bigger rectangle
        assert Polygon(s.obox.corners()).buffer(1e-6).contains(Point(moved))
        r = got[relabelled.id]
        assert r.category == "Bicycle" and r.provenance.edited
        assert same_rectangle(r.obox, relabelled.obox)
        untouched = [a for a in cars if a.id not in (stretched.id, relabelled.id)]
        assert [got[a.id] for a in untouched] == untouched
    finally:
        ds.delete()


def test_boxes_from_clicks_runs_in_the_app_and_the_box_appears(tmp_path, mongo_uri):
    """An annotator's point on a missed object (the batch's first model has not finished:
    the box comes from the image) becomes a box through the operator browser: the `` ` ``
    key, "Boxes from clicks", Execute; the App's server runs it and the pull has the box."""
    import fiftyone as fo
    from flows.annotate import app as fapp
    from flows.annotate import fiftyone_sync as fsync
    from flows.annotate.mongo import free_port
    images_dir, pre = make_project(tmp_path, n_images=1)
    (tmp_path / "params.yaml").write_text("flows:\n  min_score: 0.3\n")  # no model yet
    name = unique_name("browser-clicks")
    ds = fsync.sync_batch(tmp_path, 1, name, images_dir)
    sample = ds.first()
    before = [d.to_dict() for d in sample["corrections"].detections]
    sample["box_clicks"] = fo.Detections(detections=[   # the ground truth's missed Bicycle
        fo.Detection(label="Bicycle", bounding_box=[505 / 640, 108 / 512, 0.004, 0.004])])
    sample.save()
    info = fapp.start_app(tmp_path, port=free_port(), dataset=name, uri=mongo_uri)
    try:
        shots = SHOTS / "click-boxes"
        with annotate_tab(info, sample, shots) as page:
            page.keyboard.press("`")
            search = page.get_by_placeholder("Search operations by name...")
            search.fill("Boxes from clicks")
            page.screenshot(path=shots / "2-operator-browser.png")
            search.press("Enter")
            with page.expect_response(lambda r: "/operators/execute" in r.url) as ran:
                page.get_by_role("button", name="Execute").click()
            assert ran.value.status == 200 and ran.value.json()["error"] is None, \
                ran.value.text()
            page.get_by_role("button", name="Close").click()
            # the App reloads the sample: the new box is in the LABELS list
            page.locator('[data-cy^="annotate-label-"]', has_text="Bicycle").wait_for()
            page.screenshot(path=shots / "3-box-from-click.png")
        sample.reload()
        made = sample["corrections"].detections[-1]
        assert [d.to_dict() for d in sample["corrections"].detections[:3]] == before
        assert made.label == "Bicycle" and made["source"] == "click_box"
        box = fsync.pull_batch(tmp_path, 1, name).labels.images[0].annotations[-1]
        assert box.provenance.source == "click_box" and box.box.contains(505.0, 108.0)
    finally:
        fapp.stop_app(tmp_path, stop_mongo=False)
        ds.delete()
