"""flows.min_score auto: after training, each model gets the score threshold that would have
saved the most annotation time on the held-out split, and its pre-annotations use it (real sample data)."""
from __future__ import annotations

import json
import shutil

import torch

from flows import iteration_steps, model_policy, prepare_steps
from flows.project import batches, pool_split
from flows.project.project import Project
from flows.commands.demo import SAMPLE
from flows.accounting.workload import NONE_SHOWN, diff_batch, saving, workload
from flows.project.init import init_project
from tests.fixtures_flows import light_demo_params
from tinyloop.annotations import LabelSet
from tinyloop.cocofile import read_labels


def test_auto_min_score_is_chosen_per_model_and_filters_its_boxes(tmp_path):
    torch.set_num_threads(1)
    params = light_demo_params(**{"flows.min_score": "auto", "flows.versioning": False})
    root = init_project(tmp_path / "project", source=str(SAMPLE), params_overrides=params).root
    p = Project.open(root)
    prepare_steps.ingest(p)
    prepare_steps.features(p)
    prepare_steps.order(p)
    store = iteration_steps.open_store(p)
    iteration_steps.preannotate(p, 1)
    iteration_steps.simulate_annotation(p, store, 1)
    iteration_steps.pull(p, store, 1)
    iteration_steps.train(p, 1)
    metrics = iteration_steps.evaluate(p, 1)

    chosen_file = p.layout.threshold(1)
    chosen = json.loads(chosen_file.read_text())
    curve = {r["min_score"]: r["wt_reduction_pct"] for r in chosen["wt_by_min_score"]}
    assert list(curve) == model_policy.THRESHOLDS and chosen["images"] == 4
    if chosen["min_score"] == NONE_SHOWN:  # no score saved auto_min_gain_pct: none shown
        assert max(curve.values()) < p.params.flows.auto_min_gain_pct
    else:
        assert curve[chosen["min_score"]] == max(curve.values())
    assert metrics["min_score"] == chosen["min_score"]
    assert model_policy.min_score_for(p, p.layout.model(1)) == chosen["min_score"]

    items = batches.batch_records(p, 2).images
    scored = iteration_steps.predict_images(p, p.layout.model(1), items)  # any threshold
    shown = {}
    for t in (0.0, 1.0):  # the file decides what batch 2 is shown
        chosen_file.write_text(json.dumps({**chosen, "min_score": t}))
        shown[t] = [a for i in iteration_steps.shown(p, p.layout.model(1), scored)
                    for a in i.annotations]
    assert shown[0.0] and not shown[1.0]
    assert all(a.provenance.score < 1.0 for a in shown[0.0])

    # a model whose boxes are hidden gets no clicks: they would cost time and show nothing;
    # every box it scored is kept beside the (empty) pre-annotations for the track record
    chosen_file.write_text(json.dumps({**chosen, "min_score": NONE_SHOWN}))
    iteration_steps.preannotate(p, 2)
    assert not any(i.annotations for i in read_labels(p.layout.preannotations(2)))
    kept = read_labels(p.layout.scored_predictions(2))
    assert [a for i in kept for a in i.annotations] == shown[0.0]
    assert iteration_steps.simulate_annotation(p, store, 2)["clicks"] == 0

    # the track record: model 1's savings per score on batch 2, once annotators corrected it,
    # equal what batch 2 would have cost had model 1 been shown from that score
    iteration_steps.pull(p, store, 2)
    track = model_policy.track_record(p, 2)
    assert [r["min_score"] for r in track] == model_policy.THRESHOLDS
    p.layout.scored_predictions(2).rename(tmp_path / "kept.json")  # an older project: forward
    assert model_policy.track_record(p, 2) == track
    (tmp_path / "kept.json").rename(p.layout.scored_predictions(2))
    truth = read_labels(p.layout.labels(2))
    chosen_file.write_text(json.dumps({**chosen, "min_score": 0.5}))
    shown = LabelSet(truth.categories, iteration_steps.shown(p, p.layout.model(1), scored))
    w = workload(diff_batch(shown, truth, p.params.workload.iou, p.params.workload.geometry),
                 p.params.workload, first_batch=False)
    assert _at(track, 0.5)["wt_reduction_pct"] == w["reduction_WT_pct"]

    # ... and vetoes the scores of model 2's held-out curve from which model 1 lost time
    # there (model 1's weights stand in for model 2: the rule, not the training, is tested)
    shutil.copytree(p.layout.model(1).parent, p.layout.model(2).parent)
    p.layout.threshold(2).unlink()
    p.params.flows.auto_min_gain_pct = -1000.0  # the held-out split always picks a score
    chosen2 = model_policy.choose_min_score(p, 2, pool_split.eval_set(p))
    assert chosen2["track_record"]["wt_by_min_score"] == track
    held, score = chosen2["wt_by_min_score"], chosen2["min_score"]
    allowed = [r["min_score"] for r in track if saving(r) >= 0]
    assert score == (max(allowed, key=lambda t: (saving(_at(held, t)), t)) if allowed
                     else NONE_SHOWN)
    held_best = max(held, key=lambda r: (saving(r), r["min_score"]))["min_score"]
    assert chosen2.get("held_out_min_score", score) == held_best
    assert ("held_out_min_score" in chosen2) == (score != held_best)


def _at(curve: list[dict], score: float) -> dict:
    return next(r for r in curve if r["min_score"] == score)
