"""The shared data model, the labels file and atomic writes."""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import time

import pytest

from tinyloop.annotations import (Annotation, AnnotationError, Box, Click, IgnoreRegion,
                                  ImageLabels, ImageRecord, LabelSet, OrientedBox,
                                  Provenance)
from tinyloop.atomic import write_json_atomic
from tinyloop.cocofile import from_coco, read_labels, to_coco, write_labels


def full_labelset() -> LabelSet:
    rec = ImageRecord("0_100_30_0_03281", "images/0_100_30_0_03281.jpg", 640, 512, 1,
                      {"frame": 3281, "altitude_m": 100, "split": "train"})
    item = ImageLabels(rec, annotations=[
        Annotation("Car", Box(29.0, 114.0, 63.0, 146.0),
                   OrientedBox(46.7844, 130.1887, 29.2965, 18.02, 2.524211)),
        Annotation("Person", Box(221.5, 28.25, 228.125, 42.0),
                   provenance=Provenance("click_refined", "iter-002", 0.8731, edited=True),
                   difficult=True, id="b-7"),
    ], ignore=[IgnoreRegion(Box(300, 300, 340, 330), category="DontCare")],
        clicks=[Click(225.1, 35.3, "Person", round=2, source="simulated")])
    other = ImageLabels(ImageRecord("empty", "images/empty.png", 32, 16, 3))
    return LabelSet(["Person", "Car", "Bicycle"], [item, other], info={"batch": 7})


def test_round_trip_is_lossless(tmp_path):
    labels = full_labelset()
    path = write_labels(labels, tmp_path / "labels.json")
    back = read_labels(path)
    assert back == labels
    # and the bytes are stable: writing what was read gives the same file
    write_labels(back, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()


def test_file_is_plain_coco_for_coco_tools(tmp_path):
    doc = to_coco(full_labelset())
    ann = doc["annotations"][0]
    assert ann["bbox"] == [29.0, 114.0, 34.0, 32.0] and ann["area"] == 34.0 * 32.0
    assert {c["name"] for c in doc["categories"]} == {"Person", "Car", "Bicycle"}
    assert doc["annotations"][1]["score"] == 0.8731
    from pycocotools.coco import COCO
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(doc))
    coco = COCO(str(path))
    assert len(coco.getAnnIds()) == 2 and len(coco.getImgIds()) == 2


def test_plain_coco_gets_ids_from_file_stems():
    doc = {"images": [{"id": 5, "file_name": "a/b/img1.jpg", "width": 10, "height": 10}],
           "annotations": [{"id": 1, "image_id": 5, "category_id": 3, "bbox": [1, 1, 2, 2]}],
           "categories": [{"id": 3, "name": "car"}]}
    labels = from_coco(doc)
    assert labels.images[0].id == "img1"
    assert labels.images[0].annotations[0].provenance.source == "human"


@pytest.mark.parametrize("doc, message", [
    ({"images": []}, "missing 'categories'"),
    ({"images": [{"id": 1, "file_name": "x.jpg", "width": 1, "height": 1}],
      "annotations": [{"id": 9, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]}],
      "categories": [{"id": 1, "name": "a"}]}, "image_id 2, which is not in 'images'"),
    ({"images": [{"id": 1, "file_name": "x.jpg", "width": 1, "height": 1}],
      "annotations": [{"id": 9, "image_id": 1, "category_id": 4, "bbox": [0, 0, 1, 1]}],
      "categories": [{"id": 1, "name": "a"}]}, "unknown category_id 4"),
    ({"images": [{"id": 1, "file_name": "x.jpg", "width": 1, "height": 1},
                 {"id": 1, "file_name": "y.jpg", "width": 1, "height": 1}],
      "categories": []}, "duplicate image id 1"),
])
def test_bad_coco_files_name_the_problem(doc, message):
    with pytest.raises(AnnotationError, match=message):
        from_coco(doc, source="labels.json")


def test_unreadable_labels_file_says_how_to_restore(tmp_path):
    bad = tmp_path / "labels.json"
    bad.write_text('{"images": [')
    with pytest.raises(AnnotationError, match="dvc checkout"):
        read_labels(bad)


def test_box_geometry_and_problems():
    a, b = Box(0, 0, 10, 10), Box(5, 0, 15, 10)
    assert a.iou(b) == pytest.approx(50 / 150)
    assert Box(0, 0, 16, 9).size == 12
    assert Box(3, 3, 3, 9).problem(20, 20).endswith("zero or negative area")
    assert "outside the 20x20 image" in Box(15, 15, 25, 18).problem(20, 20)
    assert Box(-0.5, 0, 20.5, 20).problem(20, 20) is None  # one pixel of rounding tolerated


def test_oriented_box_polygon_matches_corners():
    ob = OrientedBox(10, 20, 8, 4, math.pi / 2)  # turned a quarter: 4 wide, 8 tall
    bb = ob.bounding_box()
    assert (bb.width, bb.height) == pytest.approx((4, 8))
    assert ob.polygon().area == pytest.approx(32)
    back = OrientedBox.from_corners(ob.corners())
    assert back.polygon().symmetric_difference(ob.polygon()).area == pytest.approx(0, abs=1e-6)


def test_unknown_class_is_named():
    with pytest.raises(AnnotationError, match="unknown class 'Tank'.*Person, Car"):
        full_labelset().category_index("Tank")


def _hammer(path: str) -> None:
    big = {"payload": ["x" * 100] * 20000}
    i = 0
    while True:
        big["i"] = i
        write_json_atomic(path, big)
        i += 1


def test_kill_during_writes_never_leaves_half_a_file(tmp_path):
    """SIGKILL a process that rewrites a 2 MB file in a loop: the file always parses."""
    path = tmp_path / "labels.json"
    write_json_atomic(path, {"payload": [], "i": -1})
    for _ in range(3):
        proc = multiprocessing.get_context("fork").Process(target=_hammer, args=(str(path),))
        proc.start()
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        assert "i" in json.loads(path.read_text())
    leftovers = [p for p in tmp_path.iterdir() if p.name != "labels.json"]
    assert all(p.name.endswith(".tmp") for p in leftovers)  # only temp files, never the target
