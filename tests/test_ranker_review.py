"""Ranker trained on past batches (people's FileStore history or simulation.json) orders a
batch for review; `tinyloop review BATCH`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from flows.annotate.file_store import FileStore
from flows.cli import main
from flows.project.config import SimulatorParams
from flows.accounting.degraded_predictor import DegradedTruthPredictor
from flows.project.layout import ProjectLayout
from flows.accounting.ranker import batch_training_logs, feature_matrix, order_batch_for_review
from flows.accounting.simulator import simulate_batch
from tinyloop.annotations import ImageLabels, LabelSet

from tests.fixtures_workload import CLASSES, grid_truth


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    rng = np.random.default_rng(4)
    truth = LabelSet(CLASSES, [grid_truth(int(rng.integers(2, 12)),
                                          lambda i: float(rng.uniform(6, 30)),
                                          image=f"r{k:02d}") for k in range(44)])
    predict = DegradedTruthPredictor(truth, seed=2)
    store = FileStore(root)
    logs = {}
    for batch, items in ((1, truth.images[:22]), (2, truth.images[22:])):
        sub = LabelSet(CLASSES, items)
        store.open_batch(batch, LabelSet(CLASSES, [ImageLabels(im.image, predict(im.id, []))
                                                   for im in sub]))
        logs[batch] = simulate_batch(store, batch, sub, predict,
                                     SimulatorParams(rounds=2, clicks_per_round=2),
                                     progress=False)
        store.pull(batch)
    return ProjectLayout(root), logs


def test_a_peoples_batch_yields_the_same_training_data_as_its_simulation(project):
    layout, logs = project
    from_files = batch_training_logs(layout, 1)       # no simulation.json: FileStore history
    assert [log.remaining_error for log in from_files] == \
        [log.remaining_error for log in logs[1]]
    assert np.allclose(feature_matrix(from_files), feature_matrix(logs[1]))
    assert sum(log.remaining_error for log in from_files) > 0


def test_review_order_is_written_and_uses_the_trained_ranker(project, capsys):
    layout, logs = project
    out = order_batch_for_review(layout, 2)
    assert out["method"] == "random forest" and out["trained_on_batches"] == [1]
    assert sorted(out["order"]) == sorted(log.image_id for log in logs[2])
    saved = json.loads((layout.batch_dir(2) / "review.json").read_text())
    assert saved["order"] == out["order"]
    pred = [saved["predicted_error"][i] for i in saved["order"]]
    assert pred == sorted(pred, reverse=True)
    assert main(["review", "2", "-C", str(layout.root), "--top", "3"]) == 0
    printed = capsys.readouterr().out
    assert out["order"][0] in printed and "random forest" in printed


def test_without_training_data_a_rule_orders_and_says_so(project):
    layout, logs = project
    out = order_batch_for_review(layout, 2, train_batches=[])
    assert out["method"].startswith("rule") and len(out["order"]) == len(logs[2])
    assert main(["review", "9", "-C", str(layout.root)]) == 1
