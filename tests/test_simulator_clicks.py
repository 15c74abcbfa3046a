"""The simulated annotator: noise statistics, largest-errors-first, exact final labels."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from flows.annotate.file_store import FileStore
from flows.project.config import SimulatorParams, WorkloadParams
from flows.accounting.simulator import edits_needed, find_errors, simulate_batch
from flows.accounting.workload import diff_batch, workload
from tinyloop.annotations import (Annotation, Box, Click, IgnoreRegion, ImageLabels,
                                  ImageRecord, LabelSet, Provenance)
from tinyloop.cocofile import read_labels

from tests.fixtures_workload import CLASSES, grid_truth



def model(cat, box, score=0.8):
    return Annotation(cat, box, provenance=Provenance("click_refined", "fake", score))


class ClickOracle:
    """Stands in for a trained interactive detector: it keeps its first output and, for every
    click, returns the ground-truth box whose centre is nearest (within `reach` px)."""

    def __init__(self, truth: LabelSet, first: LabelSet, reach: float = 15.0):
        self.truth, self.first, self.reach = truth.by_id(), first.by_id(), reach
        self.calls: list[tuple[str, int]] = []

    def __call__(self, image_id: str, clicks: list[Click]) -> list[Annotation]:
        self.calls.append((image_id, len(clicks)))
        out = [model(a.category, a.box) for a in self.first[image_id].annotations]
        for c in clicks:
            near = min(self.truth[image_id].annotations,
                       key=lambda g: np.hypot(g.box.center[0] - c.x, g.box.center[1] - c.y))
            if np.hypot(near.box.center[0] - c.x, near.box.center[1] - c.y) <= self.reach:
                out = [a for a in out if a.box.iou(near.box) < 0.3]
                out.append(model(c.category, near.box, 0.95))
        return out


def run(tmp_path, truth: LabelSet, pre: LabelSet, params: SimulatorParams, batch: int = 2):
    store = FileStore(tmp_path)
    store.open_batch(batch, pre)
    oracle = ClickOracle(truth, pre)
    logs = simulate_batch(store, batch, truth, oracle, params, progress=False)
    return store, logs, oracle


def test_click_noise_has_the_configured_sigma(tmp_path):
    truth = LabelSet(CLASSES, [grid_truth(200)])
    pre = LabelSet(CLASSES, [ImageLabels(truth.images[0].image)])
    params = SimulatorParams(click_sigma=3.0, rounds=1, clicks_per_round=200, seed=7,
                             correct=False)
    store, _, _ = run(tmp_path, truth, pre, params)
    clicks = store.get_labels("g").clicks
    centres = {(a.category, a.box.center) for a in truth.images[0].annotations}
    offsets = []
    for c in clicks:   # each click's own target: the nearest centre (60 px grid >> 3 px noise)
        cat, (cx, cy) = min(centres, key=lambda t: np.hypot(t[1][0] - c.x, t[1][1] - c.y))
        assert cat == c.category and c.source == "simulated" and c.round == 1
        offsets.append((c.x - cx, c.y - cy))
    d = np.array(offsets)
    assert len(d) == 200
    assert d.std() == pytest.approx(3.0, abs=0.35)          # 400 samples: s.e. ~0.11
    assert np.abs(d.mean(axis=0)).max() < 0.6


def test_zero_noise_clicks_the_exact_centre_and_seed_reproduces(tmp_path):
    truth = LabelSet(CLASSES, [grid_truth(5)])
    pre = LabelSet(CLASSES, [ImageLabels(truth.images[0].image)])
    store, _, _ = run(tmp_path / "a", truth, pre,
                      SimulatorParams(noise="none", rounds=1, clicks_per_round=5))
    centres = sorted(a.box.center for a in truth.images[0].annotations)
    assert sorted((c.x, c.y) for c in store.get_labels("g").clicks) == centres
    p = SimulatorParams(click_sigma=4.0, seed=3)
    a = run(tmp_path / "b", truth, pre, p)[0].get_labels("g").clicks
    b = run(tmp_path / "c", truth, pre, p)[0].get_labels("g").clicks
    assert a == b


def test_largest_errors_are_clicked_first_round_by_round(tmp_path):
    sizes = [4, 12, 8, 20, 6, 16, 10]               # all missed by the first prediction
    truth = LabelSet(CLASSES, [grid_truth(len(sizes), lambda i: sizes[i])])
    pre = LabelSet(CLASSES, [ImageLabels(truth.images[0].image)])
    params = SimulatorParams(noise="none", rounds=3, clicks_per_round=2, correct=False)
    store, logs, oracle = run(tmp_path, truth, pre, params)
    size_at = {a.box.center: a.box.width for a in truth.images[0].annotations}
    by_round = {}
    for c in store.get_labels("g").clicks:
        by_round.setdefault(c.round, []).append(size_at[(c.x, c.y)])
    assert by_round == {1: [20, 16], 2: [12, 10], 3: [8, 6]}
    assert [r.errors_seen for r in logs[0].rounds] == [7, 5, 3]
    assert oracle.calls == [("g", 2), ("g", 4), ("g", 6)]   # re-predicted after each round
    assert logs[0].remaining_error == 1                    # the 4 px object never clicked


def test_misclassified_objects_are_errors_and_tiny_ones_can_be_ignored():
    truth = grid_truth(3, lambda i: [20, 10, 3][i])
    boxes = [replace(truth.annotations[0], category="Bicycle"), truth.annotations[1]]
    errors = find_errors(boxes, truth, 0.5, min_size=0)
    assert [e.box.width for e in errors] == [20, 3]
    assert [e.box.width for e in find_errors(boxes, truth, 0.5, min_size=5)] == [20]


def test_final_labels_equal_ground_truth_and_diff_sees_real_edits(tmp_path):
    rec = ImageRecord("h", "h.png", 200, 200)
    g = [Annotation("Car", Box(10, 10, 30, 30)), Annotation("Person", Box(50, 50, 58, 62)),
         Annotation("Bicycle", Box(100, 100, 110, 112)),
         Annotation("Car", Box(150, 20, 170, 40))]
    ignore = [IgnoreRegion(Box(0, 150, 50, 200))]
    truth = LabelSet(CLASSES, [ImageLabels(rec, g, ignore)])
    first = [model("Car", Box(11, 10, 31, 30)),        # accepted (IoU .90)
             model("Car", Box(50, 50, 58, 62)),        # wrong class -> relabeled
             model("Person", Box(160, 160, 170, 170)),  # false positive -> deleted
             model("Car", Box(10, 160, 20, 170))]       # in the ignore region
    pre = LabelSet(CLASSES, [ImageLabels(rec, first, ignore)])  # bicycle, 2nd car missed
    params = SimulatorParams(noise="none", rounds=1, clicks_per_round=1)
    store, logs, _ = run(tmp_path, truth, pre, params)
    final = store.pull(2)
    assert {(a.category, a.box) for a in final.images[0].annotations} == \
        {(a.category, a.box) for a in g}
    assert logs[0].start_error == 4        # 1 relabel + 1 delete + 2 additions
    assert logs[0].remaining_error == 3    # the click fixed the largest (the missed car)
    d = diff_batch(read_labels(store.layout.preannotations(2)), final, 0.5).totals()
    # the clicked car (largest error) came from the oracle, then the rest was edited by hand
    assert (d["accepted"], d["relabeled"], d["deleted"], d["added"]) == (1, 1, 1, 2)
    assert d["clicks_by_round"] == {1: 1}
    w = workload(diff_batch(read_labels(store.layout.preannotations(2)), final, 0.5),
                 WorkloadParams(), first_batch=False)
    assert w["WB"] == 2 + 1 + 1 + 1        # An = 2 added + 1 relabeled; Rn = 1 + 1
    assert edits_needed(final.images[0].annotations, truth.images[0]) == 0


def test_a_failing_image_is_reported_after_the_others_are_done(tmp_path):
    truth = LabelSet(CLASSES, [grid_truth(2, image="ok"), grid_truth(2, image="bad")])
    pre = LabelSet(CLASSES, [ImageLabels(im.image) for im in truth])
    store = FileStore(tmp_path)
    store.open_batch(2, pre)

    def predict(image_id, clicks):
        if image_id == "bad":
            raise ValueError("detector crashed")
        return []

    with pytest.raises(RuntimeError, match="bad: ValueError: detector crashed"):
        simulate_batch(store, 2, truth, predict, SimulatorParams(), progress=False)
    assert len(store.get_labels("ok").annotations) == 2


def test_a_rational_annotator_stops_clicking_when_clicks_do_not_pay(tmp_path):
    """A detector that ignores clicks: Benenson et al. 2019's annotator clicks all 3 rounds, the one
    with stop_unpaid_clicks gives up after the first; a helpful one is clicked to the end."""
    truth = LabelSet(CLASSES, [grid_truth(12)])
    pre = LabelSet(CLASSES, [ImageLabels(truth.images[0].image)])
    params = SimulatorParams(rounds=3, clicks_per_round=3, click_sigma=0.0, correct=False)
    useless = lambda image_id, clicks: []  # noqa: E731
    rounds = {}
    for stop in (False, True):
        store = FileStore(tmp_path / f"useless-{stop}")
        store.open_batch(2, pre)
        logs = simulate_batch(store, 2, truth, useless,
                              replace(params, stop_unpaid_clicks=stop), progress=False)
        rounds[stop] = len(logs[0].rounds)
    assert rounds == {False: 3, True: 1}
    _, logs, _ = run(tmp_path / "oracle", truth, pre, replace(params, stop_unpaid_clicks=True))
    assert len(logs[0].rounds) == 3  # each round turns 3 misses into right boxes: 21 s saved


def test_after_unpaid_images_in_a_row_the_rest_of_the_batch_gets_no_clicks(tmp_path):
    """give_up_after_unpaid: a click-blind detector costs one round on each of the first two
    images, then the annotator stops clicking; a helpful detector is clicked on every image."""
    truth = LabelSet(CLASSES, [grid_truth(6, image=f"im{i}") for i in range(5)])
    pre = LabelSet(CLASSES, [ImageLabels(im.image) for im in truth])
    params = SimulatorParams(rounds=3, clicks_per_round=3, click_sigma=0.0, correct=False,
                             stop_unpaid_clicks=True, give_up_after_unpaid=2)
    store = FileStore(tmp_path / "useless")
    store.open_batch(2, pre)
    logs = simulate_batch(store, 2, truth, lambda image_id, clicks: [], params, progress=False)
    assert [len(log.rounds) for log in logs] == [1, 1, 0, 0, 0]
    assert [log.unpaid for log in logs] == [True, True, False, False, False]
    _, logs, _ = run(tmp_path / "oracle", truth, pre, params)
    assert all(len(log.rounds) >= 1 and not log.unpaid for log in logs)


def test_once_the_batch_clicks_are_behind_the_rest_of_the_batch_gets_no_clicks(tmp_path):
    """give_up_when_behind: a click-blind detector costs one unpaid round on the first image
    (3 clicks: 8 + 2 x 3 = 14 s), then nothing more; a helpful detector keeps its clicks."""
    truth = LabelSet(CLASSES, [grid_truth(6, image=f"im{i}") for i in range(5)])
    pre = LabelSet(CLASSES, [ImageLabels(im.image) for im in truth])
    params = SimulatorParams(rounds=3, clicks_per_round=3, click_sigma=0.0, correct=False,
                             stop_unpaid_clicks=True, give_up_when_behind=True)
    store = FileStore(tmp_path / "useless")
    store.open_batch(2, pre)
    logs = simulate_batch(store, 2, truth, lambda image_id, clicks: [], params, progress=False)
    assert [len(log.rounds) for log in logs] == [1, 0, 0, 0, 0]
    assert logs[0].click_balance_s == -14.0
    _, logs, _ = run(tmp_path / "oracle", truth, pre, params)
    assert all(len(log.rounds) >= 1 and log.click_balance_s > 0 for log in logs)
