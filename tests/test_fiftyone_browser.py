"""The real App in headless Chromium: draw a box, relabel another and delete a third in the
Annotate tab, pull, find all edits in labels.json. Needs Debian's `chromium` (/usr/bin/chromium) and
Playwright; screenshots of each step go to $TMPDIR/tinyloop-browser/ for debugging."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.fixtures_fiftyone import make_project, unique_name
from tinyloop.cocofile import read_labels

CHROMIUM = os.environ.get("TINYLOOP_CHROMIUM", "/usr/bin/chromium")
pytestmark = [pytest.mark.mongo, pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason=f"{CHROMIUM} missing: apt-get install -y chromium")]
SHOTS = Path(tempfile.gettempdir()) / "tinyloop-browser"
TIMEOUT_MS = 120_000  # the App's first render is slow on 2 busy cores


def _label_option(page, label: str) -> None:
    """Choose `label` in the open detection's label combobox (headless-ui: ArrowDown opens)."""
    combo = page.locator('[data-cy="root_label_container"] input[role="combobox"]')
    combo.click(timeout=TIMEOUT_MS)
    combo.press("ArrowDown")
    with page.expect_response(lambda r: r.request.method == "PATCH",
                              timeout=TIMEOUT_MS) as saved:
        page.get_by_role("option", name=label, exact=True).click(timeout=TIMEOUT_MS)
    assert saved.value.status == 200, saved.value.text()


def test_draw_and_relabel_in_the_annotate_tab_then_pull(tmp_path, mongo_uri):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    from flows.annotate import app as fapp
    from flows.annotate import fiftyone_sync as fsync
    from flows.annotate.mongo import free_port
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    images_dir, pre = make_project(tmp_path, n_images=1)
    name = unique_name("browser")
    ds = fsync.sync_batch(tmp_path, 1, name, images_dir)
    sample = ds.first()
    person = sample["corrections"].detections[1]  # the model's "Person" box, id a01
    doomed = sample["corrections"].detections[2]  # the model's low-score "Car", id a02
    assert person.label == "Person" and doomed.label == "Car"
    info = fapp.start_app(tmp_path, port=free_port(), dataset=name, uri=mongo_uri)
    try:
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
                page.locator('[data-cy="lighter-sample-renderer-canvas"]').wait_for()
                page.screenshot(path=SHOTS / "1-annotate-tab.png")
                # draw a new box (in an empty area of the image) and call it OtherVehicle
                page.locator('[data-cy="detection-mode"]').click()
                bb = page.locator('[data-cy="lighter-sample-renderer-canvas"]').bounding_box()
                x0, y0 = bb["x"] + bb["width"] * 0.7, bb["y"] + bb["height"] * 0.25
                with page.expect_response(lambda r: r.request.method == "PATCH") as drawn:
                    page.mouse.move(x0, y0)
                    page.mouse.down()
                    for k in range(1, 11):
                        page.mouse.move(x0 + 6 * k, y0 + 4 * k)
                    page.mouse.up()
                assert drawn.value.status == 200, drawn.value.text()
                page.screenshot(path=SHOTS / "2-drawn.png")
                _label_option(page, "OtherVehicle")
                page.screenshot(path=SHOTS / "3-drawn-relabelled.png")
                # relabel the model's Person box as Bicycle
                page.locator('[data-cy="annotate-edit-back"]').click()
                page.locator(f'[data-cy="annotate-label-{person.id}"]').click()
                _label_option(page, "Bicycle")
                page.screenshot(path=SHOTS / "4-relabelled.png")
                # delete the low-score Car: select it, press Delete
                page.locator('[data-cy="annotate-edit-back"]').click()
                page.locator(f'[data-cy="annotate-label-{doomed.id}"]').click()
                with page.expect_response(lambda r: r.request.method == "PATCH") as deleted:
                    page.keyboard.press("Delete")
                assert deleted.value.status == 200, deleted.value.text()
                page.screenshot(path=SHOTS / "5-deleted.png")
            except Exception:
                page.screenshot(path=SHOTS / "failure.png")
                raise
            finally:
                browser.close()
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
