"""Box-level diff categories and seed-002 workload numbers on hand-made cases."""
from __future__ import annotations

from dataclasses import replace

import pytest

from flows.project.config import WorkloadParams
from flows.accounting.workload import batch_workload, cumulative, diff_batch, match, workload
from tinyloop.annotations import (Annotation, Box, Click, IgnoreRegion, ImageLabels,
                                  ImageRecord, LabelSet, Provenance)

CLASSES = ["Person", "Car", "Bicycle", "OtherVehicle"]
MODEL = Provenance("model", "m1", 0.9)


def ann(cat, x1, y1, x2, y2, model=False):
    return Annotation(cat, Box(x1, y1, x2, y2), provenance=MODEL if model else
                      Provenance("human"))


def hand_made() -> tuple[LabelSet, LabelSet]:
    """One image with exactly one box of each kind (see the comments for the IoUs)."""
    rec = ImageRecord("img", "img.jpg", 100, 60)
    ignore = [IgnoreRegion(Box(55, 35, 75, 55))]
    pre = [ann("Car", 0, 0, 10, 10, True),        # A: accepted (IoU 1)
           ann("Car", 20, 0, 30, 10, True),       # B: IoU 80/120 = 0.667: accepted@.5 moved@.7
           ann("Person", 40, 0, 50, 10, True),    # C: relabeled to Car
           ann("Person", 60, 0, 70, 10, True),    # D: deleted
           ann("Car", 60, 40, 70, 50, True),      # F: inside the ignore region
           ann("Car", 0, 40, 10, 50, True)]       # H: IoU 50/150 = 0.333: moved
    final = [ann("Car", 0, 0, 10, 10), ann("Car", 22, 0, 32, 10), ann("Car", 40, 0, 50, 10),
             ann("Bicycle", 80, 0, 90, 10),       # E: added
             ann("Car", 62, 42, 68, 48),          # G: inside the ignore region
             ann("Car", 5, 40, 15, 50)]
    clicks = [Click(5, 5, "Car", 1), Click(45, 5, "Car", 1), Click(85, 5, "Bicycle", 2)]
    return (LabelSet(CLASSES, [ImageLabels(rec, pre, ignore)]),
            LabelSet(CLASSES, [ImageLabels(rec, final, ignore, clicks)]))


def test_every_category_at_iou_05():
    pre, final = hand_made()
    t = diff_batch(pre, final, 0.5).totals()
    assert {k: t[k] for k in ("accepted", "moved", "relabeled", "deleted", "added")} == \
        {"accepted": 2, "moved": 1, "relabeled": 1, "deleted": 1, "added": 1}
    assert t["ignored"] == 2 and t["objects"] == 5 and t["relabeled_moved"] == 0
    assert t["clicks_by_round"] == {1: 2, 2: 1} and t["clicks"] == 3


def test_stricter_threshold_turns_a_nudge_into_a_move():
    pre, final = hand_made()
    t = diff_batch(pre, final, 0.7).totals()
    assert (t["accepted"], t["moved"]) == (1, 2)


def test_relabel_and_move_is_one_relabel_counted_as_also_moved():
    rec = ImageRecord("i", "i.jpg", 50, 50)
    pre = LabelSet(CLASSES, [ImageLabels(rec, [ann("Person", 0, 0, 10, 10, True)])])
    fin = LabelSet(CLASSES, [ImageLabels(rec, [ann("Car", 5, 0, 15, 10)])])
    t = diff_batch(pre, fin, 0.5).totals()
    assert (t["relabeled"], t["relabeled_moved"], t["added"], t["deleted"]) == (1, 1, 0, 0)


def test_hungarian_beats_greedy_matching():
    # greedy would pair X with U (IoU .667) and leave Y deleted and V added; the optimal
    # assignment X-V (.538) + Y-U (.176) keeps both objects.
    X, Y = ann("Car", 0, 0, 10, 10), ann("Car", 0, 9, 10, 19)
    U, V = ann("Car", 0, 2, 10, 12), ann("Car", 0, -3, 10, 7)
    pairs = {(i, j) for i, j, _ in match([X, Y], [U, V])}
    assert pairs == {(0, 1), (1, 0)}


def test_disjoint_boxes_are_never_the_same_object():
    rec = ImageRecord("i", "i.jpg", 50, 50)
    pre = LabelSet(CLASSES, [ImageLabels(rec, [ann("Car", 0, 0, 10, 10, True)])])
    fin = LabelSet(CLASSES, [ImageLabels(rec, [ann("Car", 20, 20, 30, 30)])])
    t = diff_batch(pre, fin, 0.5).totals()
    assert (t["deleted"], t["added"], t["moved"]) == (1, 1, 0)


def test_workload_matches_hand_computed_numbers():
    pre, final = hand_made()
    cost = WorkloadParams()  # T = 7 s, removal T/2, move 3.5 s, relabel 3 s, 4/8/3 s
    w = workload(diff_batch(pre, final, 0.5), cost, first_batch=False)
    # An = added 1 + moved 1 + relabeled 1 = 3; Rn = deleted 1 + moved 1 + relabeled 1 = 3
    assert (w["additions"], w["removals"], w["WB"]) == (3, 3, 6)
    assert w["WT"] == pytest.approx(3 * 7 + 3 * 3.5)            # 31.5 s
    assert w["manual_seconds"] == pytest.approx(5 * 7)          # 35 s
    assert w["reduction_WT_pct"] == pytest.approx(10.0)
    assert w["reduction_WB_pct"] == pytest.approx(-20.0)
    # 4 s look + round 1: 8 + 3, round 2: 8 + edits: 7 + 3.5 + 3.5 + 3 = 40 s
    assert w["seconds"] == pytest.approx(4 + 11 + 8 + 17)
    w7 = workload(diff_batch(pre, final, 0.7), cost, first_batch=False)
    assert (w7["WB"], w7["WT"]) == (8, pytest.approx(4 * 7 + 4 * 3.5))


def test_an_image_the_model_showed_nothing_on_costs_what_drawing_it_does():
    pre, final = hand_made()
    empty = LabelSet(CLASSES, [ImageLabels(im.image) for im in pre.images])
    final = LabelSet(CLASSES, [replace(im, clicks=[]) for im in final.images])  # no clicks
    w = workload(diff_batch(empty, final, 0.5), WorkloadParams(), first_batch=False)
    assert w["seconds"] == pytest.approx(w["manual_seconds"]) == pytest.approx(5 * 7)
    assert w["reduction_seconds_pct"] == 0.0


def test_first_batch_is_fully_manual():
    pre, final = hand_made()
    w = workload(diff_batch(pre, final, 0.5), WorkloadParams(box_seconds=10),
                 first_batch=True)
    assert (w["WB"], w["WT"], w["reduction_WT_pct"]) == (5, 50, 0.0)


def test_edits_are_charged_against_the_refined_output_when_given():
    pre, final = hand_made()
    cost = WorkloadParams()
    refined = LabelSet(CLASSES, [ImageLabels(final.images[0].image,
                                             list(final.images[0].annotations))])
    out = batch_workload(pre, final, cost, first_batch=False, refined=refined)
    # the clicks fixed everything: 4 s look + 19 s of clicks, no edits left
    assert out["seconds"] == pytest.approx(23)
    assert out["WB"] == 6 and out["iou_0.7"]["WB"] == 8


def test_cumulative_sums_batches_and_recomputes_reduction():
    pre, final = hand_made()
    cost = WorkloadParams()
    b1 = workload(diff_batch(pre, final, 0.5), cost, first_batch=True)
    b2 = workload(diff_batch(pre, final, 0.5), cost, first_batch=False)
    c = cumulative([b1, b2])
    assert c["WT"] == pytest.approx(35 + 31.5) and c["WB"] == 11
    assert c["reduction_WT_pct"] == pytest.approx(100 * (1 - 66.5 / 70), abs=0.01)


def test_image_missing_from_preannotations_counts_as_added():
    pre, final = hand_made()
    t = diff_batch(LabelSet(CLASSES), final, 0.5).totals()
    assert t["added"] == 5 and t["deleted"] == 0


def test_min_score_is_chosen_where_both_wt_and_time_save_most():
    """Three right boxes at 0.8-0.9 and two wrong ones at 0.3: showing only the right ones
    saves 3 boxes of 5 (60 %); showing all costs two deletions (3 - 2/2 = 2 of 5: 40 %);
    showing none saves nothing."""
    from flows.accounting.workload import NONE_SHOWN, best_threshold, wt_by_threshold
    rec = ImageRecord("img", "img.jpg", 200, 60)
    truth = [ann("Car", 10 * k, 0, 10 * k + 8, 8) for k in range(5)]
    scored = [(0.9, truth[0]), (0.85, truth[1]), (0.8, truth[2]),
              (0.3, ann("Car", 100, 40, 108, 48)), (0.3, ann("Person", 150, 40, 158, 48))]
    pre = [Annotation(a.category, a.box, provenance=Provenance("model", "m1", s))
           for s, a in scored]
    curve = wt_by_threshold(LabelSet(CLASSES, [ImageLabels(rec, pre)]),
                            LabelSet(CLASSES, [ImageLabels(rec, truth)]), WorkloadParams(),
                            [0.1, 0.5, 0.95])
    assert [r["wt_reduction_pct"] for r in curve] == [40.0, 60.0, 0.0]
    # time: the 4 s check of the image, then 2 boxes drawn (+ 2 deleted at 0.1) of 35 s
    assert [round(r["seconds_reduction_pct"], 2) for r in curve] == [28.57, 48.57, 0.0]
    assert best_threshold(curve) == 0.5
    assert best_threshold(curve, min_gain_pct=48.0) == 0.5
    assert best_threshold(curve, min_gain_pct=49.0) == NONE_SHOWN > 1.0  # not worth showing
    # the smaller of the two gains decides: time says 0.1, WT says 0.5 -> 0.5
    rows = [{"min_score": 0.1, "wt_reduction_pct": 5.0, "seconds_reduction_pct": 20.0},
            {"min_score": 0.5, "wt_reduction_pct": 8.0, "seconds_reduction_pct": 9.0}]
    assert best_threshold(rows) == 0.5
    useless = [{"min_score": t, "wt_reduction_pct": -5.0, "seconds_reduction_pct": -5.0}
               for t in (0.1, 0.5)]
    assert best_threshold(useless) == NONE_SHOWN


def test_the_previous_models_cost_on_the_latest_batch_vetoes_held_out_scores():
    """Held-out images prefer 0.5; the previous model at 0.5 lost time on the batch just
    corrected (the smaller of WT and time decides): the best score it did not lose at wins
    (break-even counts), if it still clears the bar; no score left: hidden."""
    from flows.accounting.workload import NONE_SHOWN, best_threshold

    def rows(*savings):
        return [{"min_score": t, "wt_reduction_pct": wt, "seconds_reduction_pct": sec}
                for t, (wt, sec) in zip((0.5, 0.9, 0.95), savings)]
    held = rows((10.0, 10.0), (6.0, 7.0), (3.0, 3.0))
    track = rows((4.0, -1.0), (0.0, 0.0), (12.0, 10.0))
    assert best_threshold(held) == 0.5
    assert best_threshold(held, track=track) == 0.9
    assert best_threshold(held, 7.0, track) == NONE_SHOWN  # 0.9 saves 6 held out
    assert best_threshold(held, track=rows((-1, -1), (-1, 5), (-2, -2))) == NONE_SHOWN
    assert best_threshold(held, track=[]) == 0.5  # no record (model 1): the held-out rule


def test_a_model_that_saves_wt_but_costs_time_is_not_shown():
    """Two one-object images, one right and one wrong box: WT saves 25 % (10.5 of 14 s), but
    checking both images (2 x 4 s) makes the batch 32 % slower than drawing: not shown."""
    from flows.accounting.workload import NONE_SHOWN, best_threshold, wt_by_threshold
    recs = [ImageRecord(f"img{i}", f"img{i}.jpg", 60, 60) for i in range(2)]
    truth = [ann("Car", 10, 10, 20, 20), ann("Car", 30, 30, 40, 40)]
    shown = [ann("Car", 10, 10, 20, 20), ann("Car", 40, 0, 50, 8)]
    pre = [[Annotation(a.category, a.box, provenance=Provenance("model", "m1", 0.9))]
           for a in shown]
    curve = wt_by_threshold(LabelSet(CLASSES, [ImageLabels(r, p) for r, p in zip(recs, pre)]),
                            LabelSet(CLASSES, [ImageLabels(r, [t]) for r, t in zip(recs, truth)]),
                            WorkloadParams(), [0.5])
    assert curve[0]["wt_reduction_pct"] == 25.0
    assert round(curve[0]["seconds_reduction_pct"], 1) == -32.1
    assert best_threshold(curve, min_gain_pct=2.0) == NONE_SHOWN


def test_the_diff_and_map_leave_out_the_same_boxes_in_ignore_regions():
    """One ignore rule (tinyloop.boxes): half the area inside one region or more."""
    import torch

    from c3det.evaluate import drop_ignored
    from flows.accounting.workload import outside_ignore
    region = IgnoreRegion(Box(50, 50, 100, 100))
    boxes = [ann("Car", 60, 60, 70, 70),    # all inside
             ann("Car", 40, 60, 60, 70),    # exactly half inside: ignored
             ann("Car", 30, 60, 55, 70),    # 20 % inside: kept
             ann("Car", 0, 0, 10, 10),      # outside
             ann("Car", 50, 50, 50, 60)]    # no area: kept
    kept = outside_ignore(boxes, [region])
    keep = drop_ignored(torch.tensor([a.box.xyxy() for a in boxes]),
                        torch.tensor([region.box.xyxy()]), 0.5)
    assert [a in kept for a in boxes] == keep.tolist() == [False, False, True, True, True]


# --- oriented boxes: geometry auto | box | oriented ------------------------------------------

def oriented(cat, cx, cy, w, h, angle, model=False):
    from tinyloop.annotations import OrientedBox
    o = OrientedBox(cx, cy, w, h, angle)
    return Annotation(cat, o.bounding_box(), o, MODEL if model else Provenance("human"))


def turned_by_annotator() -> tuple[LabelSet, LabelSet]:
    """A 40 x 10 box at +45 degrees that the annotator turned to -45 degrees about its
    centre, and one left alone. The turned pair has the same axis-aligned outline (box IoU
    1) but crosses in a 10 x 10 square: polygon IoU 100 / 700."""
    import math
    rec = ImageRecord("img", "img.jpg", 200, 100)
    pre = [oriented("Car", 50, 50, 40, 10, math.pi / 4, True),
           oriented("Car", 150, 50, 30, 12, 0.2, True)]
    final = [oriented("Car", 50, 50, 40, 10, -math.pi / 4), pre[1]]
    return (LabelSet(CLASSES, [ImageLabels(rec, pre)]),
            LabelSet(CLASSES, [ImageLabels(rec, final)]))


def _kinds(t):
    return {k: t[k] for k in ("accepted", "moved", "relabeled", "deleted", "added")}


def test_turned_oriented_box_is_moved_by_oriented_geometry():
    pre, final = turned_by_annotator()
    both = {"relabeled": 0, "deleted": 0, "added": 0}
    assert _kinds(diff_batch(pre, final, 0.5, "box").totals()) == \
        {"accepted": 2, "moved": 0, **both}                 # the outline did not change
    for geometry in ("oriented", "auto"):                   # auto: both sides are oriented
        t = diff_batch(pre, final, 0.5, geometry).totals()
        assert _kinds(t) == {"accepted": 1, "moved": 1, **both}, geometry
        assert t["oriented_images"] == 1
    ious = sorted(o for _, _, o in match(pre.images[0].annotations,
                                         final.images[0].annotations, oriented=True))
    assert ious == [pytest.approx(1 / 7), pytest.approx(1.0)]


def test_auto_geometry_needs_oriented_boxes_on_both_sides():
    """A detector without oriented boxes is judged by its axis-aligned boxes."""
    pre, final = turned_by_annotator()
    plain = LabelSet(CLASSES, [ImageLabels(im.image, [replace(a, obox=None)
                                                      for a in im.annotations])
                               for im in pre.images])
    t = diff_batch(plain, final, 0.5, "auto").totals()
    assert t["accepted"] == 2 and t["oriented_images"] == 0
    # oriented regardless: an annotation without an oriented box counts as its box
    t = diff_batch(plain, final, 0.5, "oriented").totals()
    assert (t["accepted"], t["moved"], t["oriented_images"]) == (1, 1, 1)
    with pytest.raises(ValueError, match="workload.geometry"):
        diff_batch(pre, final, 0.5, "polygon")


def test_axis_aligned_labels_diff_the_same_under_every_geometry():
    pre, final = hand_made()               # plain boxes, an ignore region, every category
    box = diff_batch(pre, final, 0.5, "box").totals()
    for geometry in ("oriented", "auto"):
        t = diff_batch(pre, final, 0.5, geometry).totals()
        assert {k: v for k, v in t.items() if k != "oriented_images"} == \
            {k: v for k, v in box.items() if k != "oriented_images"}


def test_workload_params_geometry_reaches_the_batch_workload():
    from tinyloop.params import ParamsError, build
    pre, final = turned_by_annotator()
    assert WorkloadParams().geometry == "auto"
    by_polygon = batch_workload(pre, final, WorkloadParams(), first_batch=False)
    by_box = batch_workload(pre, final, build(WorkloadParams, {"geometry": "box"}, "workload"),
                            first_batch=False)
    assert (by_polygon["diff"]["moved"], by_box["diff"]["moved"]) == (1, 0)
    assert by_polygon["oriented_images"] == 1 and by_box["oriented_images"] == 0
    assert by_polygon["WT"] == pytest.approx(7 + 3.5) and by_box["WT"] == 0
    assert by_polygon["iou_0.5"]["per_image"][0]["geometry"] == "oriented"
    with pytest.raises(ParamsError, match="workload.geometry"):
        build(WorkloadParams, {"geometry": "polygon"}, "workload")


def test_real_sample_boxes_turned_by_90_degrees_are_moved_by_polygon_iou():
    """The bundled HIT-UAV sample's roLabelImg boxes as the final labels; the
    pre-annotation turns every elongated box (long side >= 1.5 x short side) by 90 degrees
    about its centre. By polygon IoU at 0.7 exactly the turned boxes are moved; by the
    axis-aligned outlines, a third of them pass as accepted at 0.5."""
    import math
    from pathlib import Path

    from tinyloop.config import DataParams
    from tinyloop.ingest import import_dataset
    root = Path(__file__).resolve().parents[1] / "data" / "sample" / "hit-uav"
    final, report = import_dataset(root, DataParams(verify_images="header"), progress=False)
    assert report.problems == []

    def elongated(a):
        return max(a.obox.w, a.obox.h) >= 1.5 * min(a.obox.w, a.obox.h)

    def turned(a):
        o = replace(a.obox, angle=a.obox.angle + math.pi / 2) if elongated(a) else a.obox
        return replace(a, box=o.bounding_box(), obox=o, provenance=MODEL)

    pre = LabelSet(final.categories, [ImageLabels(im.image, [turned(a) for a in im.annotations])
                                      for im in final])
    n_turned = sum(elongated(a) for im in final for a in im.annotations)
    n_objects = sum(len(im.annotations) for im in final)
    assert n_turned > 400
    t = diff_batch(pre, final, 0.7).totals()                 # auto: both sides oriented
    assert t["oriented_images"] == len(final)
    assert (t["moved"], t["accepted"]) == (n_turned, n_objects - n_turned)
    by_box = diff_batch(pre, final, 0.5, "box").totals()
    by_polygon = diff_batch(pre, final, 0.5, "oriented").totals()
    assert by_box["accepted"] - by_polygon["accepted"] > n_turned / 4   # measured 268 vs 95
