"""FileStore: the file-backed AnnotationStore (edits persisted atomically, provenance, pull)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from flows.annotate.annotation_store import AnnotationStore, refresh_predictions
from flows.annotate.file_store import FileStore
from flows.project.layout import ProjectLayout
from tinyloop.annotations import (Annotation, AnnotationError, Box, Click, ImageLabels,
                                  ImageRecord, LabelSet, Provenance)
from tinyloop.cocofile import read_labels

CLASSES = ["Person", "Car"]
MODEL = Provenance("model", "iter-001", 0.8)


def preannotations(n_images: int = 2) -> LabelSet:
    items = [ImageLabels(ImageRecord(f"im{i}", f"im{i}.jpg", 100, 80),
                         [Annotation("Car", Box(10, 10, 20, 20), provenance=MODEL),
                          Annotation("Person", Box(50, 50, 60, 60), provenance=MODEL)])
             for i in range(n_images)]
    return LabelSet(CLASSES, items)


def test_filestore_is_an_annotation_store(tmp_path):
    assert isinstance(FileStore(tmp_path), AnnotationStore)


def test_edits_survive_a_new_process_and_get_edited_provenance(tmp_path):
    store = FileStore(tmp_path)
    store.open_batch(1, preannotations())
    car, person = store.get_labels("im0").annotations
    store.set_annotations("im0", [replace(car, box=Box(11, 10, 21, 20)), person,
                                  Annotation("Person", Box(70, 5, 80, 15))])
    store.add_click("im0", Click(75, 10, "Person", round=1))
    again = FileStore(tmp_path)            # a restart finds the image by id
    moved, untouched, drawn = again.get_labels("im0").annotations
    assert moved.provenance.edited and moved.id == car.id
    assert not untouched.provenance.edited and untouched.id == person.id
    assert drawn.provenance.source == "human" and drawn.id
    assert again.get_labels("im0").clicks == [Click(75, 10, "Person", 1)]
    assert again.version("im0") == 2


def test_reopening_a_batch_never_overwrites_edits(tmp_path):
    store = FileStore(tmp_path)
    store.open_batch(1, preannotations())
    store.set_annotations("im1", [])
    FileStore(tmp_path).open_batch(1, preannotations())
    assert FileStore(tmp_path).get_labels("im1").annotations == []


def test_bad_boxes_are_refused_with_every_problem_named(tmp_path):
    store = FileStore(tmp_path)
    store.open_batch(1, preannotations())
    with pytest.raises(AnnotationError) as e:
        store.set_annotations("im0", [Annotation("Dog", Box(1, 1, 5, 5)),
                                      Annotation("Car", Box(5, 5, 5, 9)),
                                      Annotation("Car", Box(90, 70, 130, 90))])
    msg = str(e.value)
    assert "im0" in msg and "'Dog'" in msg and "zero" in msg and "outside" in msg
    assert len(store.get_labels("im0").annotations) == 2   # nothing half-applied
    with pytest.raises(AnnotationError, match="unknown class"):
        store.add_click("im0", Click(1, 1, "Dog"))


def test_pull_writes_labels_and_clicks_and_is_idempotent(tmp_path):
    store = FileStore(tmp_path)
    store.open_batch(3, preannotations())
    store.add_click("im1", Click(15, 15, "Car", 2))
    store.mark_done(3)
    layout = ProjectLayout(tmp_path)
    assert store.is_done(3) and layout.done_marker(3).exists()
    labels = store.pull(3)
    first = layout.labels(3).read_bytes()
    store.pull(3)
    assert layout.labels(3).read_bytes() == first
    assert [im.id for im in read_labels(layout.labels(3))] == ["im0", "im1"]
    assert len(labels.images[1].clicks) == 1
    clicks = json.loads(layout.clicks(3).read_text())
    assert clicks["clicks"]["im1"][0]["round"] == 2


def test_refresh_keeps_human_boxes_and_replaces_untouched_model_boxes(tmp_path):
    store = FileStore(tmp_path)
    store.open_batch(1, preannotations())
    car, person = store.get_labels("im0").annotations
    store.set_annotations("im0", [replace(car, category="Person"), person])  # relabel car
    new = [Annotation("Car", Box(11, 11, 21, 21), provenance=Provenance("click_refined",
                                                                        "iter-001", 0.9)),
           Annotation("Car", Box(30, 30, 40, 40), provenance=Provenance("click_refined",
                                                                        "iter-001", 0.7))]
    anns = refresh_predictions(store, "im0", new)
    boxes = {(a.category, a.box.x1) for a in anns}
    # the edited box stays, the prediction on top of it is dropped, the untouched model box
    # (person at 50) is replaced by the new output
    assert boxes == {("Person", 10), ("Car", 30)}
    store.pull(1)
    refined = read_labels(store.refined_path(1)).by_id()["im0"].annotations
    assert len(refined) == 2 and refined[0].provenance.source == "click_refined"


def test_a_kill_never_loses_an_acknowledged_edit(tmp_path):
    FileStore(tmp_path).open_batch(1, preannotations(1))
    script = textwrap.dedent(f"""
        import sys
        from flows.annotate.file_store import FileStore
        from tinyloop.annotations import Click
        store = FileStore({str(tmp_path)!r})
        for i in range(100000):
            store.add_click("im0", Click(i % 90, 5, "Car", 1))
            print(i, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).parents[1])
    acknowledged = -1
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= 30:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    clicks = FileStore(tmp_path).get_labels("im0").clicks   # still valid JSON
    assert len(clicks) >= acknowledged + 1


def test_memory_store_keeps_the_same_rules():
    from flows.annotate.memory_store import MemoryStore
    store = MemoryStore(preannotations())
    assert isinstance(store, AnnotationStore)
    car, person = store.get_labels("im0").annotations
    assert car.id and person.id
    store.set_annotations("im0", [replace(car, category="Person"), person])
    assert store.get_labels("im0").annotations[0].provenance.edited
    with pytest.raises(AnnotationError, match="zero"):
        store.set_annotations("im0", [Annotation("Car", Box(5, 5, 5, 9))])
    assert [im.id for im in store.pull(1)] == ["im0", "im1"]


def test_concurrent_writers_lose_nothing_and_stale_edits_are_refused(tmp_path):
    from flows.annotate.annotation_store import StaleEditError
    FileStore(tmp_path).open_batch(1, preannotations(1))
    script = textwrap.dedent(f"""
        import sys
        from flows.annotate.file_store import FileStore
        from tinyloop.annotations import Click
        store = FileStore({str(tmp_path)!r})
        for i in range(40):
            store.add_click("im0", Click(i, int(sys.argv[1]), "Car", 1))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(y)],
                              cwd=Path(__file__).parents[1]) for y in (5, 6)]
    assert [p.wait() for p in procs] == [0, 0]
    store = FileStore(tmp_path)
    clicks = store.get_labels("im0").clicks
    assert sorted((c.x, c.y) for c in clicks) == sorted((i, y) for i in range(40)
                                                       for y in (5, 6))
    seen = store.version("im0")
    anns = store.get_labels("im0").annotations
    store.add_click("im0", Click(1, 1, "Car"))            # someone else edits meanwhile
    with pytest.raises(StaleEditError, match="reload"):
        store.set_annotations("im0", anns[:1], expected_version=seen)
    assert len(store.get_labels("im0").annotations) == 2  # the stale edit did not land
    store.set_annotations("im0", anns[:1], expected_version=store.version("im0"))
    assert len(store.get_labels("im0").annotations) == 1


def test_refresh_clips_model_boxes_to_the_image(tmp_path):
    store = FileStore(tmp_path)
    store.open_batch(1, preannotations(1))
    over = [Annotation("Car", Box(90, 70, 130, 95), provenance=MODEL),   # overhangs 100x80
            Annotation("Car", Box(100.5, 5, 120, 15), provenance=MODEL)]  # fully outside
    anns = refresh_predictions(store, "im0", over)
    assert [a.box for a in anns] == [Box(90, 70, 100, 80)]


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_restart_batch_goes_back_to_the_preannotations(tmp_path, kind):
    """What `iteration_steps.publish(fresh=True)` does before a simulated batch starts again."""
    from flows.annotate.memory_store import MemoryStore
    pre = preannotations()
    store = FileStore(tmp_path) if kind == "file" else MemoryStore(pre)
    store.open_batch(1, pre)
    start = {i: store.get_labels(i) for i in ("im0", "im1")}
    car, _ = start["im0"].annotations
    store.set_annotations("im0", [replace(car, category="Person")])
    store.add_click("im1", Click(15, 15, "Car", 1))
    refresh_predictions(store, "im1", [Annotation("Car", Box(30, 30, 40, 40),
                                                  provenance=MODEL)])
    store.restart_batch(1)
    assert store.open_batch(1, pre) == ["im0", "im1"]
    assert {i: store.get_labels(i) for i in ("im0", "im1")} == start
