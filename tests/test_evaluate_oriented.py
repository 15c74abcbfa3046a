"""DOTA-style mAP of oriented boxes: hand-computed APs, polygon IoU, difficult objects,
ignore regions, size buckets, and the bundled HIT-UAV sample's rotated labels."""
import math
from dataclasses import replace

import numpy as np
import pytest

from c3det.config import EvalParams
from c3det.evaluate_oriented import dota_map, greedy_match, voc_ap
from tinyloop.annotations import (Annotation, IgnoreRegion, ImageLabels, ImageRecord, LabelSet,
                                  OrientedBox, Provenance)

CLASSES = ["Person", "Car"]
IMAGE = ImageRecord("img", "img.jpg", 400, 300)


def obj(cx, cy, w=30, h=10, angle=0.3, cat="Car", difficult=False):
    o = OrientedBox(cx, cy, w, h, angle)
    return Annotation(cat, o.bounding_box(), o, difficult=difficult)


def det(a: Annotation, score: float, **change) -> Annotation:
    o = replace(a.obox, **change)
    return Annotation(a.category, o.bounding_box(), o, Provenance("model", "m1", score))


def sets(truth, found, ignore=()):
    return (LabelSet(CLASSES, [ImageLabels(IMAGE, list(truth), list(ignore))]),
            LabelSet(CLASSES, [ImageLabels(IMAGE, list(found))]))


def test_three_objects_four_detections_hand_computed():
    """Ranked TP, FP (a duplicate of the first), TP, FP (nothing there); 3 objects.
    recall 1/3 1/3 2/3 2/3, precision 1 1/2 2/3 1/2.
    11-point: max precision at recall >= 0, .1, .2, .3 is 1; at .4, .5, .6 it is 2/3; at
    .7 .. 1 there is none: AP = (4 + 3 * 2/3) / 11 = 6/11.
    Area (VOC 2010+): 1/3 * 1 + 1/3 * 2/3 = 5/9."""
    a, b, c = obj(50, 50), obj(150, 50, angle=-0.8), obj(250, 50, angle=1.2)
    truth, found = sets([a, b, c], [det(a, 0.9), det(a, 0.8, cx=51), det(b, 0.7),
                                    det(a, 0.6, cx=350, cy=200)])
    r = dota_map(truth, found)
    assert r["per_class"] == {"Person": None, "Car": pytest.approx(100 * 6 / 11)}
    assert r["map"] == pytest.approx(100 * 6 / 11)
    assert r["positives"] == {"Person": 0, "Car": 3} and r["detections"] == 4
    assert dota_map(truth, found, use_07_metric=False)["map"] == pytest.approx(100 * 5 / 9)


def test_voc_ap_both_rules_on_a_curve():
    recall, precision = np.array([0.3, 0.3, 0.6]), np.array([1.0, 0.5, 2 / 3])
    # 11-point: recall .3 reaches the threshold 0.3 (1 at 0 .. .3, 2/3 at .4 .. .6)
    assert voc_ap(recall, precision, True) == pytest.approx((4 + 3 * 2 / 3) / 11)
    assert voc_ap(recall, precision, False) == pytest.approx(0.3 + 0.3 * 2 / 3)
    assert voc_ap(np.zeros(0), np.zeros(0), True) == 0.0


def test_crossed_box_is_a_true_positive_by_outline_but_false_by_polygon():
    """A 40 x 10 box at +45 degrees and one at -45 degrees on the same centre: the same
    axis-aligned outline (box IoU 1), but they cross in a 10 x 10 square: polygon IoU
    100 / 700."""
    truth_obj = obj(100, 100, 40, 10, math.pi / 4)
    crossed = det(truth_obj, 0.9, angle=-math.pi / 4)
    assert truth_obj.box.iou(crossed.box) == pytest.approx(1.0)
    assert truth_obj.obox.polygon().intersection(crossed.obox.polygon()).area / \
        truth_obj.obox.polygon().union(crossed.obox.polygon()).area == pytest.approx(1 / 7)
    assert dota_map(*sets([truth_obj], [crossed]))["map"] == 0.0
    assert dota_map(*sets([truth_obj], [det(truth_obj, 0.9)]))["map"] == 100.0


def test_difficult_objects_count_in_neither_direction():
    """A (difficult) found at 0.9, a wrong box at 0.7, B found at 0.5, C (difficult) never
    found. Counting only B: ignored, FP, TP: precision 1/2 at recall 1, AP 50. Were A an
    ordinary object: TP, FP, TP of 2: 11-point AP (6 * 1 + 5 * 2/3) / 11."""
    a = obj(50, 50, difficult=True)
    b, c = obj(150, 50), obj(250, 150, difficult=True)
    found = [det(a, 0.9), det(b, 0.7, cx=300, cy=250), det(b, 0.5)]
    r = dota_map(*sets([a, b, c], found))
    assert r["map"] == pytest.approx(50.0) and r["positives"]["Car"] == 1
    plain = dota_map(*sets([replace(a, difficult=False), b], found))
    assert plain["map"] == pytest.approx(100 * (6 + 5 * 2 / 3) / 11)
    only_difficult = dota_map(*sets([a], [det(a, 0.9)]))
    assert only_difficult["per_class"]["Car"] is None and only_difficult["map"] == 0.0


def test_greedy_match_takes_the_best_overlap_then_counts_duplicates():
    ious = np.array([[0.9, 0.6], [0.8, 0.7], [0.5, 0.5], [0.2, 0.3]])  # rows: best first
    tp, fp = greedy_match(ious, np.array([False, False]), 0.5)
    # row 1's best object is taken: a duplicate, although object 2 overlaps it by 0.7
    # (the devkit's rule); IoU exactly 0.5 does not count (strictly greater)
    assert tp.tolist() == [True, False, False, False]
    assert fp.tolist() == [False, True, True, True]
    tp, fp = greedy_match(np.zeros((2, 0)), np.zeros(0, bool), 0.5)
    assert fp.tolist() == [True, True]


def test_detection_in_an_ignore_region_is_dropped():
    a = obj(50, 50)
    region = IgnoreRegion(OrientedBox(300, 200, 80, 80, 0.5).bounding_box(),
                          OrientedBox(300, 200, 80, 80, 0.5))
    inside = det(a, 0.95, cx=300, cy=200)
    assert dota_map(*sets([a], [inside, det(a, 0.5)], [region]))["map"] == pytest.approx(100)
    assert dota_map(*sets([a], [inside, det(a, 0.5)]))["map"] == pytest.approx(50)


def test_ap_by_object_size():
    """A 10 px object found, a 25 px one missed, an unmatched 40 px false positive: it only
    costs the >32 view, which has no objects (None)."""
    small, mid = obj(50, 50, 10, 10), obj(150, 50, 25, 25)
    found = [det(small, 0.8), det(small, 0.9, cx=300, cy=200, w=40, h=40)]
    r = dota_map(*sets([small, mid], found))
    assert r["by_size"] == {"<12": 100.0, "12-20": None, "20-32": 0.0, ">32": None}
    assert r["per_class_by_size"]["Car"]["<12"] == 100.0
    # over all sizes: FP, TP, (missed) -> precision 1/2 up to recall 1/2
    assert r["map"] == pytest.approx(100 * 6 * 0.5 / 11)


def test_unknown_images_and_classes_are_refused():
    truth, found = sets([obj(50, 50)], [])
    other = LabelSet(CLASSES, [ImageLabels(replace(IMAGE, id="elsewhere"))])
    with pytest.raises(ValueError, match="without ground truth"):
        dota_map(truth, other)
    bus = LabelSet(CLASSES, [ImageLabels(IMAGE, [det(obj(50, 50, cat="Bus"), 0.9)])])
    with pytest.raises(ValueError, match="Bus"):
        dota_map(truth, bus)
    assert dota_map(truth, found)["map"] == 0.0


def _hituav_sample() -> LabelSet:
    from pathlib import Path

    from tinyloop.config import DataParams
    from tinyloop.ingest import import_dataset
    root = Path(__file__).resolve().parents[1] / "data" / "sample" / "hit-uav"
    labels, report = import_dataset(root, DataParams(verify_images="header"), progress=False)
    assert report.problems == []
    return labels


def _as_predictions(labels: LabelSet, turn) -> LabelSet:
    return LabelSet(labels.categories, [
        ImageLabels(im.image, [det(a, 1.0, angle=turn(a.obox)) for a in im.annotations])
        for im in labels])


def test_real_sample_against_itself_and_turned_by_90_degrees():
    """The sample's roLabelImg boxes as predictions score 100; every elongated box
    (long side >= 1.5 x short side, most of them) turned by 90 degrees about its centre
    misses its object (square-ish ones still hit)."""
    truth = _hituav_sample()
    objects = [a for im in truth for a in im.annotations]
    assert len(objects) > 500 and all(a.obox is not None for a in objects)
    same = dota_map(truth, _as_predictions(truth, lambda o: o.angle))
    assert same["map"] == pytest.approx(100.0)
    assert all(v == pytest.approx(100.0) for v in same["per_class"].values())

    def turned(o):
        elongated = max(o.w, o.h) >= 1.5 * min(o.w, o.h)
        return o.angle + math.pi / 2 if elongated else o.angle

    worse = dota_map(truth, _as_predictions(truth, turned), EvalParams())
    assert worse["map"] < 20.0                 # measured 3.9 (11-point)
    assert all(v < 50.0 for v in worse["per_class"].values())
