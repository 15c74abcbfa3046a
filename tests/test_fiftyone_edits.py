"""Concurrent edits (the App's 412), "Refine with clicks" and "Mark batch done", on a real
MongoDB. The 412 goes through FiftyOne's own App server routes (in-process ASGI client)."""
from __future__ import annotations

import base64

import pytest

from tests.fixtures_fiftyone import synced_batch
from tinyloop.annotations import Annotation, Box, Provenance
from tinyloop.cocofile import read_labels

pytestmark = pytest.mark.mongo


@pytest.fixture
def project(tmp_path, mongo_uri):
    with synced_batch(tmp_path, "edits") as synced:
        yield synced


@pytest.fixture(scope="module")
def server():
    from starlette.testclient import TestClient
    from fiftyone.server.app import app
    return TestClient(app)


def _etag(sample) -> str:
    """The App's If-Match value: base64 of the sample's last_modified_at (ISO)."""
    return base64.b64encode(sample.last_modified_at.isoformat().encode()).decode()


def _patch(server, ds, sample, ops, etag):
    return server.patch(f"/dataset/{ds._doc.id}/sample/{sample.id}", json=ops,
                        headers={"If-Match": etag,
                                 "Content-Type": "application/json-patch+json"})


def test_stale_app_edit_gets_412_and_the_retry_keeps_both_edits(project, server):
    from flows.annotate.fiftyone_store import FiftyOneStore
    root, pre, ds, name = project
    image = pre.images[0].id
    sample = [s for s in ds if s["image_id"] == image][0]
    stale = _etag(sample)  # the annotator's browser loaded the sample here
    # meanwhile a second writer (another annotator, the simulator, a refine) saves it
    store = FiftyOneStore(root, name)
    anns = store.get_labels(image).annotations
    store.set_annotations(image, anns + [Annotation("Bicycle", Box(5, 5, 25, 25),
                                                    provenance=Provenance("human"))])
    relabel = [{"op": "replace", "path": "/corrections/detections/1/label",
                "value": "OtherVehicle"}]
    r = _patch(server, ds, sample, relabel, stale)
    assert r.status_code == 412
    # the 412 carries the sample as it is now and its current ETag: the App reloads and
    # re-applies; doing the same here succeeds and loses neither edit
    fresh = r.headers["ETag"].strip('"').removeprefix("W/").strip('"')
    assert [d["label"] for d in r.json()["corrections"]["detections"]][-1] == "Bicycle"
    r2 = _patch(server, ds, sample, relabel, fresh)
    assert r2.status_code == 200, r2.text
    labels = store.pull(1).by_id()[image].annotations
    assert [a.category for a in labels] == ["Car", "OtherVehicle", "Car", "Bicycle"]
    assert labels[1].provenance.edited


def test_store_edit_racing_another_writer_is_retried_not_lost(project, monkeypatch):
    from flows.annotate import fiftyone_store
    from flows.annotate.fiftyone_store import EditConflict, FiftyOneStore
    root, pre, ds, name = project
    image = pre.images[1].id
    store, other = FiftyOneStore(root, name), FiftyOneStore(root, name)
    real = fiftyone_store.fconvert.detections_of
    raced = {"n": 0}

    def racing_detections(anns, w, h):  # another writer saves between our read and write
        if raced["n"] == 0:
            raced["n"] += 1
            other.add_click(image, fiftyone_store.fsync.Click(50, 60, "Car", 2))
        return real(anns, w, h)

    monkeypatch.setattr(fiftyone_store.fconvert, "detections_of", racing_detections)
    kept = store.get_labels(image).annotations[:1]
    store.set_annotations(image, kept)
    monkeypatch.setattr(fiftyone_store.fconvert, "detections_of", real)
    labels = store.get_labels(image)
    assert [a.id for a in labels.annotations] == [kept[0].id]   # our edit landed
    assert labels.clicks[-1].round == 2                          # and so did theirs

    def always_racing(anns, w, h):
        other.add_click(image, fiftyone_store.fsync.Click(1, 1, "Car", 3))
        return real(anns, w, h)

    monkeypatch.setattr(fiftyone_store.fconvert, "detections_of", always_racing)
    with pytest.raises(EditConflict):
        FiftyOneStore(root, name, retries=2).set_annotations(image, kept)


def test_refine_with_clicks_never_touches_edited_boxes(project):
    import fiftyone as fo
    from flows.annotate import fiftyone_convert as fconvert, fiftyone_refine as frefine
    from flows.annotate import fiftyone_sync as fsync
    root, pre, ds, name = project
    sample = [s for s in ds if s["image_id"] == pre.images[0].id][0]
    dets = sample["corrections"].detections
    dets[0].label = "Person"                                   # annotator relabels box 0
    sample["new_clicks"] = fo.Detections(detections=[          # and clicks a missed bicycle
        fo.Detection(label="Bicycle", bounding_box=[0.5, 0.5, 0.01, 0.01])])
    sample.save()
    seen = []

    def predict(path, clicks):
        seen.append(list(clicks))
        return [Annotation("Car", Box(101, 51, 131, 71), provenance=Provenance(
                    "click_refined", "iter-001", 0.95)),       # overlaps the edited box
                Annotation("Bicycle", Box(318, 254, 330, 262), provenance=Provenance(
                    "click_refined", "iter-001", 0.8))]

    counts = frefine.refine_samples(ds, [sample.id], predict)
    assert counts == {"samples": 1, "replaced": 2, "kept": 1}
    assert [c.category for c in seen[0]] == ["Car", "Bicycle"]  # file click + drawn click
    assert seen[0][1].round == 2
    sample.reload()
    labels = [d.label for d in sample["corrections"].detections]
    assert labels == ["Person", "Bicycle"]  # edited box kept; its overlapping car not added
    assert len(sample["new_clicks"].detections) == 0
    assert len(sample["predictions"].detections) == 2
    pulled = fsync.pull_batch(root, 1, name).labels.by_id()[pre.images[0].id]
    assert pulled.annotations[0].provenance.edited
    assert pulled.annotations[1].provenance.source == "click_refined"
    assert [c.round for c in pulled.clicks] == [1, 2]
    refined = read_labels(root / "data/batches/001/refined.json").by_id()[pre.images[0].id]
    assert [a.provenance.model_version for a in refined.annotations] == ["iter-001"] * 2


def test_mark_batch_done_signals_the_flow(project):
    from flows.annotate import fiftyone_convert as fconvert, fiftyone_refine as frefine
    from flows.annotate import fiftyone_sync as fsync
    root, pre, ds, name = project
    frefine.mark_batch_done(ds, root, 1)
    assert (root / "data" / "batches" / "001" / "done").exists()
    assert set(ds.values("review_status")) == {"done"}


def test_plugin_operators_are_discovered(tmp_path, mongo_uri):
    import fiftyone.plugins as fop
    from flows.annotate.app import install_plugin, plugins_dir
    install_plugin(tmp_path)
    import fiftyone as fo
    old = fo.config.plugins_dir
    fo.config.plugins_dir = str(plugins_dir(tmp_path))
    try:
        plugin = [p for p in fop.list_plugins() if p.name == "@tinyloop/annotate"]
        assert plugin and set(plugin[0].operators) == {"refine_with_clicks", "boxes_from_clicks",
                                                  "mark_batch_done"}
    finally:
        fo.config.plugins_dir = old


def test_plugin_refine_operator_runs_the_current_model_on_the_selection(project, monkeypatch):
    """The plugin's adapter code: the newest finished checkpoint with the model policy's
    classes, tiling and threshold, on the selected samples."""
    import importlib.util
    import types
    import c3det.predict
    from flows.annotate.app import PLUGIN_SRC
    root, pre, ds, name = project
    (root / "params.yaml").write_text("flows:\n  min_score: auto\n")
    for d in ("iter-001", "iter-002", "iter-003"):     # iter-003 is still training
        (root / "models" / d).mkdir(parents=True)
        (root / "models" / d / "model.pt").write_bytes(b"")
    for d in ("iter-001", "iter-002"):
        (root / "models" / d / "train.json").write_text("{}")
    (root / "models/iter-002/threshold.json").write_text('{"min_score": 0.4}')
    built = {}

    class FakePredictor:
        def __init__(self, checkpoint, classes, tiling=None, min_score=None, device=None):
            built.update(checkpoint=checkpoint, classes=classes, min_score=min_score)

        def predict(self, image, clicks):
            return [Annotation("Bicycle", Box(10, 10, 20, 20), provenance=Provenance(
                "click_refined", "iter-002", 0.7))]

    monkeypatch.setattr(c3det.predict, "Predictor", FakePredictor)
    spec = importlib.util.spec_from_file_location("tinyloop_plugin", PLUGIN_SRC / "__init__.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    target = [s for s in ds if s["image_id"] == pre.images[2].id][0]
    triggered = []
    ctx = types.SimpleNamespace(dataset=ds, view=ds.view(), selected=[target.id],
                                current_sample=None, params={},
                                trigger=lambda name, params=None: triggered.append(name))
    counts = plugin.RefineWithClicks().execute(ctx)
    assert built["checkpoint"].parent.name == "iter-002"
    assert built["classes"] == pre.categories and built["min_score"] == 0.4
    assert counts == {"samples": 1, "replaced": 3, "kept": 0}
    assert triggered == ["reload_samples"]
    target.reload()
    assert [d.label for d in target["corrections"].detections] == ["Bicycle"]
    others = [s for s in ds if s.id != target.id]
    assert all(len(s["corrections"].detections) == 3 for s in others)  # not selected
