"""Active selection (#27): each strategy picks what it should on hand-made scores and
embeddings; the record re-cuts only unpublished batches and a re-run after a kill during
selection gives the same order; the App's fields and the report name the strategy."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from features import selection as registry
from features.config import OrderParams, SelectParams
from features.select_diversity import k_center_greedy
from features.select_uncertainty import class_weights, localisation_term, score_uncertainty
from features.select_work import calibrate, match_accepted
from features.selection import Cost, ImageBoxes, SelectionRequest, SelectError, rank
from tinyloop.params import ParamsError, build


def boxes(*scores, classes=None, xyxy=None) -> ImageBoxes:
    """Boxes far apart (no overlap) unless `xyxy` is given."""
    n = len(scores)
    xyxy = np.array(xyxy if xyxy is not None else
                    [[40 * k, 0, 40 * k + 10, 10] for k in range(n)], float).reshape(-1, 4)
    return ImageBoxes(xyxy, np.array(scores, float), list(classes or ["car"] * n))


def req(ids, **kw) -> SelectionRequest:
    return SelectionRequest(list(ids), kw.pop("count", 1),
                            kw.pop("params", SelectParams(localisation_weight=0.0)), **kw)


# --- the strategies -------------------------------------------------------------------------

def test_the_registry_lists_every_strategy_and_refuses_an_unknown_one():
    assert registry.strategy_names() == ("uncertainty", "diversity", "hybrid", "work")
    with pytest.raises(SelectError, match="unknown order.select.strategy 'best'"):
        registry.strategy("best")
    with pytest.raises(SelectError, match="needs the embedding"):
        rank(req(["a"]), "diversity")


def test_uncertainty_picks_the_image_whose_boxes_the_model_is_least_sure_of():
    assert score_uncertainty(np.array([0.5]))[0] == pytest.approx(1.0)
    assert score_uncertainty(np.array([0.5]), "margin")[0] == pytest.approx(1.0)
    assert score_uncertainty(np.array([0.99, 0.02])).max() < 0.2
    images = [boxes(0.97, 0.95), boxes(0.55, 0.96), boxes(), boxes(0.9)]
    r = rank(req("abcd", boxes=images), "uncertainty")
    assert [("abcd")[i] for i in r.order] == ["b", "d", "a", "c"]
    assert "least sure: car at score 0.55" in r.reasons[1]
    assert r.scores[2] == 0.0 and "no box" in r.reasons[2]
    # max instead of mean: the single doubtful box decides
    r = rank(req("ab", boxes=[boxes(0.6, 0.99, 0.99, 0.99), boxes(0.7)],
                 params=SelectParams(aggregate="max", localisation_weight=0.0)), "uncertainty")
    assert list(r.order) == [0, 1]


def test_faint_boxes_below_min_box_score_do_not_drown_the_mean():
    faint = boxes(0.5, *[0.06] * 50)
    images = [boxes(0.75), faint]
    r = rank(req("ab", boxes=images), "uncertainty")
    assert list(r.order) == [1, 0] and "mean of 1 boxes" in r.reasons[1]
    every = rank(req("ab", boxes=images, params=SelectParams(localisation_weight=0.0,
                                                              min_box_score=0.0)), "uncertainty")
    assert list(every.order) == [0, 1]


def test_the_localisation_term_counts_confident_overlapping_rivals():
    lone = localisation_term(np.array([[0, 0, 10, 10]], float), np.array([0.9]))
    assert lone.tolist() == [0.0]
    rivals = localisation_term(np.array([[0, 0, 10, 10], [0, 0, 10, 8]], float),
                               np.array([0.9, 0.9]))
    assert rivals == pytest.approx([0.8, 0.8])
    # equal class scores, one image with two boxes on one object: it goes first
    same_scores = [boxes(0.9, 0.9), boxes(0.9, 0.9, xyxy=[[0, 0, 10, 10], [1, 0, 10, 10]])]
    r = rank(req("ab", boxes=same_scores, params=SelectParams(localisation_weight=1.0)),
             "uncertainty")
    assert list(r.order) == [1, 0]


def test_uncertainty_is_class_balanced_toward_rare_labelled_classes():
    w = class_weights({"car": 98, "person": 0}, {"car", "person"})
    assert w["person"] > 10 * w["car"]
    images = [boxes(0.6, classes=["car"]), boxes(0.6, classes=["person"])]
    r = rank(req("ab", boxes=images, class_counts={"car": 98, "person": 0}), "uncertainty")
    assert list(r.order) == [1, 0]
    plain = rank(req("ab", boxes=images, class_counts={"car": 98, "person": 0},
                     params=SelectParams(class_balance=False, localisation_weight=0.0)),
                 "uncertainty")
    assert list(plain.order) == [0, 1]  # a tie keeps the pool's order


def test_diversity_picks_the_candidate_farthest_from_everything_labelled():
    labeled = np.array([[0.0, 0.0], [10.0, 0.0]])
    x = np.array([[1.0, 0.0], [5.0, 6.0], [9.0, 1.0], [5.0, 5.5]])
    r = rank(req("abcd", vectors=x, labeled_vectors=labeled), "diversity")
    assert r.order[0] == 1                       # (5, 6): ~7.8 from both labelled points
    assert r.scores[1] == pytest.approx(np.hypot(5, 6))
    assert r.order[1] != 3                       # (5, 5.5) is next to the first pick now
    order, dist = k_center_greedy(x, None)       # nothing labelled: the first row starts
    assert order[0] == 0 and np.isinf(dist[0])


def test_hybrid_takes_the_uncertain_shortlist_then_spreads_inside_it():
    # a and b are uncertain near-copies, c uncertain elsewhere, d sure of itself
    images = [boxes(0.5), boxes(0.52), boxes(0.56), boxes(0.99)]
    x = np.array([[0.0, 5.0], [0.0, 5.1], [6.0, 0.0], [9.0, 9.0]])
    p = SelectParams(shortlist_factor=3, localisation_weight=0.0)
    r = rank(req("abcd", count=1, boxes=images, vectors=x, params=p,
                 labeled_vectors=np.zeros((1, 2))), "hybrid")
    # by uncertainty alone a batch of two would be the near-copies a, b; k-center inside the
    # shortlist takes c (farthest from the labelled origin), then b, and a, next to b, last
    assert [("abcd")[i] for i in rank(req("abcd", boxes=images, params=p),
                                      "uncertainty").order] == ["a", "b", "c", "d"]
    assert ["abcd"[i] for i in r.order] == ["c", "b", "a", "d"]
    assert "outside the uncertainty shortlist" in r.reasons[3]
    assert "diversity pick 1" in r.reasons[2] and r.scores[0] > r.scores[2]


def test_work_picks_the_image_the_model_saves_most_on_by_its_calibration():
    # calibration: the 0.9-1 bin was right, the 0.3-0.4 bin wrong
    cal = calibrate(np.array([0.91] * 40 + [0.33] * 40), np.array([1] * 40 + [0] * 40))
    assert cal.accept_probability(np.array([0.95]))[0] > 0.9
    assert cal.accept_probability(np.array([0.35]))[0] < 0.1
    images = [boxes(0.92, 0.91), boxes(0.92, 0.91, 0.9, 0.93), boxes(0.33, 0.35), boxes()]
    r = rank(req("abcd", boxes=images, calibration=cal, min_score=0.3,
                 cost=Cost(box_seconds=7.0, removal_fraction=0.5)), "work")
    assert [("abcd")[i] for i in r.order] == ["b", "a", "d", "c"]
    assert r.scores[1] > 4 * 7 * 0.9 and r.scores[2] < 0   # wrong boxes cost deletions
    assert "expected accepted" in r.reasons[1]
    # boxes under the shown cut save nothing; without calibration the score is p
    r = rank(req("ab", boxes=[boxes(0.2, 0.2), boxes(0.6)], min_score=0.5), "work")
    assert r.scores[0] == 0.0 and "no calibration" in r.reasons[1]


def test_match_accepted_is_the_workload_rule_same_class_and_iou():
    pred = boxes(0.9, 0.8, 0.7, classes=["car", "car", "person"],
                 xyxy=[[0, 0, 10, 10], [0, 0, 10, 9], [50, 50, 60, 60]])
    acc = match_accepted(pred, np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float),
                         ["car", "car"], 0.5)
    assert acc.tolist() == [True, False, False]  # one truth box once; wrong class


def test_params_check_refuses_a_bad_strategy_or_k():
    with pytest.raises(ParamsError, match="order.select.strategy: expected one of 'fixed'"):
        build(OrderParams, {"select": {"strategy": "best"}}, "order")
    with pytest.raises(ParamsError, match=r"candidate_factor \(K\) must be >= 1"):
        build(OrderParams, {"select": {"candidate_factor": 0}}, "order")
    assert build(OrderParams, {}, "order").select.strategy == "fixed"


# --- the step on project files (no model: hand-made boxes) ----------------------------------

def tiny_project(tmp_path, strategy="uncertainty", n_images=10):
    """Files of a project after iteration 1: order.json (batches of 2), batch 1 labelled,
    embeddings, params with `strategy`; no model is trained (boxes come by hand)."""
    from flows.project.layout import ProjectLayout
    from features.embed import save_store
    from tinyloop.annotations import Annotation, Box, ImageLabels, ImageRecord, LabelSet
    from tinyloop.cocofile import write_labels
    from tinyloop.atomic import write_json_atomic
    import yaml
    lay = ProjectLayout(tmp_path)
    ids = [f"img{k}" for k in range(n_images)]
    records = [ImageRecord(i, f"{i}.png", 64, 64, 3) for i in ids]
    write_labels(LabelSet(["car", "person"], [ImageLabels(r) for r in records]), lay.manifest)
    write_json_atomic(lay.order, {i: {"position": k, "batch": 1 + k // 2}
                                  for k, i in enumerate(ids)})
    write_labels(LabelSet(["car", "person"], [
        ImageLabels(records[0], [Annotation("car", Box(1, 1, 9, 9))]),
        ImageLabels(records[1], [Annotation("car", Box(1, 1, 9, 9))])]), lay.labels(1))
    lay.preannotations(1).write_text("{}")
    rng = np.random.default_rng(0)
    save_store(lay.features, rng.normal(size=(n_images, 4)).astype(np.float32), ids, {})
    lay.model(1).parent.mkdir(parents=True)
    lay.model(1).write_bytes(b"not a real model")
    (lay.model_dir(1) / "train.json").write_text("{}")
    lay.params.write_text(yaml.safe_dump({
        "data": {"classes": ["car", "person"]},
        "order": {"first_batch_size": 2, "batch_size": 2, "select": {"strategy": strategy}},
        "flows": {"min_score": 0.3}}))
    return lay, ids


def hand_scores(ids):
    """img9 is the most uncertain, then img8, ...: the reverse of the order."""
    return {i: {"id": i, "boxes": [[0, 0, 10, 10]], "scores": [0.5 + 0.04 * (9 - k)],
                "classes": ["car"]} for k, i in enumerate(ids)}


def order_of(lay):
    order = json.loads(lay.order.read_text())
    return {b: [i for _, i in sorted((e["position"], i) for i, e in order.items()
                                     if e["batch"] == b)]
            for b in sorted({e["batch"] for e in order.values()})}


def test_selection_recuts_only_unpublished_batches_and_records_why(tmp_path):
    from flows import selection
    from flows.project.project import Project
    lay, ids = tiny_project(tmp_path)
    # batch 2 was already published (its pre-annotations exist): it must not move
    lay.preannotations(2).parent.mkdir(parents=True, exist_ok=True)
    lay.preannotations(2).write_text("{}")
    before = order_of(lay)
    p = Project.open(tmp_path)
    assert selection.pending(p, 1)
    out = selection.select(p, 1, scored=hand_scores(ids))
    after = order_of(lay)
    assert after[1] == before[1] and after[2] == before[2]
    assert after[3] == ["img9", "img8"] and after[4] == ["img7", "img6"]
    assert after[5] == ["img5", "img4"]
    assert out["next_batch"] == 3 and out["next_ids"] == ["img9", "img8"]
    record = json.loads(lay.selection(1).read_text())
    assert record["strategy"] == "uncertainty" and record["fixed_through_batch"] == 2
    assert record["candidates"] == 6 and record["images_scored"] == 6
    assert record["ranking"][0]["id"] == "img9" and record["ranking"][0]["reason"]
    assert record["seconds"] >= 0
    positions = sorted(e["position"] for e in json.loads(lay.order.read_text()).values())
    assert positions == list(range(len(ids)))
    assert not selection.pending(p, 1)


def test_only_k_times_batch_size_candidates_of_a_large_rest(tmp_path):
    from flows import selection
    from flows.project.project import Project
    lay, ids = tiny_project(tmp_path)
    p = Project.open(tmp_path)
    p.params.order.select = replace(p.params.order.select, candidate_factor=2,
                                    score_all_below=3)
    pl = selection.plan(p, 1)
    assert pl.ids == ids[2:6] and pl.rest == ids[2:]
    selection.select(p, 1, scored=hand_scores(ids))
    after = order_of(lay)
    # the 4 candidates best first, then the other 4 in their old order
    assert after[2] == ["img5", "img4"] and after[3] == ["img3", "img2"]
    assert after[4] == ["img6", "img7"] and after[5] == ["img8", "img9"]


def test_diversity_step_reads_the_embeddings_against_the_labelled(tmp_path):
    from flows import selection
    from flows.project.project import Project
    lay, ids = tiny_project(tmp_path, strategy="diversity")
    out = selection.select(Project.open(tmp_path), 1)
    record = json.loads(lay.selection(1).read_text())
    assert record["images_scored"] == 0 and out["candidates"] == 8
    from features.embed import load_store
    vectors, store_ids, _ = load_store(lay.features, mmap=False)
    v = np.asarray(vectors)
    want, _ = k_center_greedy(v[2:], v[:2])
    assert record["order"] == [ids[2 + k] for k in want]


def test_a_kill_during_selection_then_a_rerun_gives_the_same_order(tmp_path, monkeypatch):
    from flows import selection
    from flows.project.project import Project
    ref, ids = tiny_project(tmp_path / "ref")
    selection.select(Project.open(ref.root), 1, scored=hand_scores(ids))
    lay, _ = tiny_project(tmp_path / "killed")
    monkeypatch.setenv("TINYLOOP_FAULT", "select:raise")
    with pytest.raises(RuntimeError, match="fault injected at select"):
        selection.select(Project.open(lay.root), 1, scored=hand_scores(ids))
    assert not lay.selection(1).exists()          # nothing half-done on disk
    monkeypatch.delenv("TINYLOOP_FAULT")
    selection.select(Project.open(lay.root), 1, scored=hand_scores(ids))
    assert order_of(lay) == order_of(ref)
    # killed after the record, before order.json: the record is applied again
    lay.order.write_text(json.dumps({i: {"position": k, "batch": 1 + k // 2}
                                     for k, i in enumerate(ids)}))
    selection.select(Project.open(lay.root), 1)
    assert order_of(lay) == order_of(ref)


def test_an_empty_rest_ends_cleanly_and_params_check_notes_a_small_pool(tmp_path):
    from flows import selection
    from flows.project.project import Project
    lay, ids = tiny_project(tmp_path, n_images=4)
    for b in (1, 2):
        lay.preannotations(b).parent.mkdir(parents=True, exist_ok=True)
        lay.preannotations(b).write_text("{}")
    p = Project.open(tmp_path)
    assert not selection.pending(p, 2)              # no batch left to cut
    out = selection.select(p, 1)
    assert out["candidates"] == 0 and "nothing to select" in out["note"]
    small = replace(p.params, order=replace(p.params.order, first_batch_size=4))
    assert "nothing for a model to select" in selection.params_notes(lay, small)[0]
    assert selection.params_notes(lay, p.params) == []


# --- what people see: the report and the App -----------------------------------------------

def write_record(lay, n, ranking, strategy="uncertainty", seconds=1.5):
    from tinyloop.atomic import write_json_atomic
    write_json_atomic(lay.selection(n), {
        "iteration": n, "strategy": strategy, "fixed_through_batch": n, "batch_size": 2,
        "seconds": seconds, "candidates": len(ranking), "images_scored": len(ranking),
        "ranking": [{"id": i, "rank": k + 1, "score": s, "reason": f"why {i}"}
                    for k, (i, s) in enumerate(ranking)],
        "order": [i for i, _ in ranking]})


def test_the_report_shows_which_strategy_chose_each_batch(tmp_path):
    from flows.accounting.report import batch_rows, format_table
    from flows.project.layout import ProjectLayout
    from tests.test_report import write_batch
    lay = ProjectLayout(tmp_path)
    for n in (1, 2):
        write_batch(lay, n, objects=10, wb=5, wt=35.0, seconds=35.0, map50=0.1)
    assert "chosen by" not in format_table(batch_rows(lay))   # no selection: no column
    write_record(lay, 1, [("img3", 0.9)], seconds=2.25)
    rows = batch_rows(lay)
    assert [r["chosen_by"] for r in rows] == ["fixed:dissimilar", "uncertainty"]
    assert rows[0]["select_s"] is None and rows[1]["select_s"] == 2.25
    assert "chosen by" in format_table(rows) and "uncertainty" in format_table(rows)


@pytest.mark.mongo
def test_published_samples_carry_their_selection_score_and_strategy(tmp_path, mongo_uri):
    from flows.annotate import fiftyone_sync as fsync
    from flows.project.layout import ProjectLayout
    from tests.fixtures_fiftyone import make_project, unique_name
    from tinyloop.atomic import write_json_atomic
    images_dir, pre = make_project(tmp_path)
    lay = ProjectLayout(tmp_path)
    # the fixture's batch as batch 2, chosen by model 1 for two of its three images
    ids = [im.id for im in pre]
    lay.batch_dir(2).mkdir(parents=True)
    lay.preannotations(2).write_bytes(lay.preannotations(1).read_bytes())
    write_json_atomic(lay.order, {i: {"position": k, "batch": 2} for k, i in enumerate(ids)})
    write_record(lay, 1, [(ids[1], 0.75), (ids[0], 0.5)])
    name = unique_name("select")
    ds = fsync.sync_batch(tmp_path, 2, name, images_dir)
    try:
        got = {s["image_id"]: (s["selection_strategy"], s["selection_score"],
                               s["selection_reason"]) for s in ds}
        assert got[ids[1]] == ("uncertainty", 0.75, f"why {ids[1]}")
        assert got[ids[0]][:2] == ("uncertainty", 0.5)
        assert got[ids[2]][0] == "fixed:dissimilar" and got[ids[2]][1] is None
        assert "not among the scored candidates" in got[ids[2]][2]
        top = ds.sort_by("selection_score", reverse=True).first()
        assert top["image_id"] == ids[1]
    finally:
        ds.delete()


# --- the loop: two iterations with a strategy, killed during the first selection -------------

@pytest.mark.prefect
def test_two_iterations_select_with_the_model_and_never_move_published_batches(tmp_path):
    """`tinyloop simulate` (12 images, batches of 4) with uncertainty selection, SIGKILLed
    inside the first selection and run again: batch 1 is the fixed order's, batch 2 the
    head of model 1's ranking, batch 2 unchanged by model 2's re-cut, order.json versioned
    with each iteration, and the resumed ranking equals one computed afresh."""
    import subprocess
    from flows import selection
    from flows.project.layout import ProjectLayout
    from flows.project.project import Project
    from tests.fixtures_flows import make_project, tinyloop
    from tests.test_flows_resume import run_until
    root = make_project(tmp_path, **{"order.select.strategy": "uncertainty"})
    run_until(root, "select", tmp_path / "reached")      # prepare + iteration 1 up to select
    lay = ProjectLayout(root)
    fixed_order = order_of(lay)
    assert lay.labels(1).exists() and not lay.selection(1).exists()
    tinyloop("simulate", "-C", str(root))

    first, second = (json.loads(lay.selection(n).read_text()) for n in (1, 2))
    assert first["candidates"] == 8 and first["images_scored"] == 8 and first["seconds"] > 0
    assert all(r["reason"] for r in first["ranking"])
    labelled = {n: [i.id for i in _read(lay.labels(n))] for n in (1, 2)}
    assert sorted(labelled[1]) == sorted(fixed_order[1])            # cut before any model
    assert sorted(labelled[2]) == sorted(first["order"][:4])        # model 1's head
    assert second["fixed_through_batch"] == 2 and second["candidates"] == 4
    final = order_of(lay)
    assert final[1] == fixed_order[1] and final[2] == first["order"][:4]
    assert final[3] == second["order"]
    # the resumed ranking is the one a clean computation gives
    p = Project.open(root)
    scored = selection.score_here(p, 1, first["order"])
    pl = selection.Plan(1, "uncertainty", 1, first["order"], first["order"], True, False)
    clean = selection.rank(selection.request(p, pl, scored), "uncertainty")
    assert [pl.ids[k] for k in clean.order] == [r["id"] for r in first["ranking"]]
    # versioned: each tag's dvc.lock holds the order.json of its re-cut
    import yaml

    def order_md5(tag):
        lock = yaml.safe_load(subprocess.run(["git", "show", f"{tag}:dvc.lock"], cwd=root,
                                             capture_output=True, text=True).stdout)
        return lock["stages"]["order"]["outs"][0]["md5"]
    import hashlib
    assert order_md5("iter-002") == hashlib.md5(lay.order.read_bytes()).hexdigest()
    assert order_md5("iter-001") != order_md5("iter-002")
    shown = subprocess.run(["git", "show", "iter-002:reports/report.md"], cwd=root,
                           capture_output=True, text=True).stdout
    assert "chosen by" in shown and "uncertainty" in shown


def _read(path):
    from tinyloop.cocofile import read_labels
    return read_labels(path)
