"""FiftyOneStore as an AnnotationStore beside the file store, on a real MongoDB: model
refreshes clip like the file store's and the App's, and a simulated batch can restart."""
from __future__ import annotations

import pytest

from tests.fixtures_fiftyone import synced_batch
from tinyloop.annotations import Annotation, Box, Provenance

pytestmark = pytest.mark.mongo


@pytest.fixture
def project(tmp_path, mongo_uri):
    with synced_batch(tmp_path, "store") as synced:
        yield synced


def test_refresh_clips_overhanging_model_boxes_the_same_way_in_every_store(project):
    """Refine with clicks (App), FiftyOneStore and FileStore refreshes share one clipping."""
    from flows.annotate import fiftyone_convert as fconvert, fiftyone_refine as frefine
    from flows.annotate import fiftyone_sync as fsync
    from flows.annotate.annotation_store import refresh_predictions
    from flows.annotate.file_store import FileStore
    from flows.annotate.fiftyone_store import FiftyOneStore
    root, pre, ds, name = project
    refined = Provenance("click_refined", "iter-001", 0.9)
    over = [Annotation("Car", Box(620, 490, 660, 530), provenance=refined),   # 640x512 image
            Annotation("Person", Box(-10, -5, 12, 20), provenance=refined),
            Annotation("Car", Box(640.5, 10, 700, 30), provenance=refined)]   # all outside
    expected = [("Car", Box(620, 490, 640, 512)), ("Person", Box(0, 0, 12, 20))]
    first, second, third = (im.id for im in pre.images)
    sample = [s for s in ds if s["image_id"] == first][0]
    frefine.refine_samples(ds, [sample.id], lambda path, clicks: over)
    fo_store = FiftyOneStore(root, name)
    fo_store.refresh_predictions(second, over)
    file_store = FileStore(root)
    file_store.open_batch(1)
    refresh_predictions(file_store, third, over)
    got = {image: [(a.category, a.box) for a in store.get_labels(image).annotations]
           for store, image in ((fo_store, first), (fo_store, second), (file_store, third))}
    assert got == {first: expected, second: expected, third: expected}


def test_fresh_publish_restarts_a_simulated_batch_from_its_preannotations(project):
    """iteration_steps.publish(fresh=True) works on FiftyOne too: corrections, clicks,
    predictions, drawn clicks and review status go back to how the batch was first published."""
    import types
    import fiftyone as fo
    from flows.annotate.fiftyone_store import FiftyOneStore
    from flows.project.layout import ProjectLayout
    from flows.iteration_steps import publish
    from tests.fixtures_fiftyone import SAMPLE
    from tinyloop.annotations import Click
    root, pre, ds, name = project
    params = types.SimpleNamespace(annotate=types.SimpleNamespace(dataset_name=name),
                                   data=types.SimpleNamespace(source=str(SAMPLE)))
    store, p = FiftyOneStore(root, params), types.SimpleNamespace(layout=ProjectLayout(root))
    first, second, _ = (im.id for im in pre.images)
    before = {im.id: store.get_labels(im.id) for im in pre.images}
    store.set_annotations(first, [Annotation("Bicycle", Box(5, 5, 25, 25))])
    store.add_click(first, Click(15, 15, "Bicycle", 2))
    refined = Provenance("click_refined", "iter-001", 0.9)
    store.refresh_predictions(second, [Annotation("Car", Box(1, 1, 30, 30), provenance=refined)])
    sample = [s for s in ds if s["image_id"] == second][0]
    sample["new_clicks"] = fo.Detections(detections=[
        fo.Detection(label="Car", bounding_box=[0.5, 0.5, 0.01, 0.01])])
    sample.save()
    ds.set_values("review_status", ["done"] * len(ds))
    assert publish(p, store, 1) == [im.id for im in pre.images]   # not fresh: edits stay
    assert [a.category for a in store.get_labels(first).annotations] == ["Bicycle"]
    assert publish(p, store, 1, fresh=True) == [im.id for im in pre.images]
    assert {im.id: store.get_labels(im.id) for im in pre.images} == before
    assert before[first].clicks == [Click(120.0, 60.0, "Car", 1, "human")]  # clicks.json
    for s in ds.select_by("image_id", [first, second]):
        assert [d.label for d in s["predictions"].detections] == ["Car", "Person", "Car"]
        assert len(s["new_clicks"].detections) == 0 and s["review_status"] == "todo"
