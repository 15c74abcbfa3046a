"""Quality ranker: process signals -> remaining error; review order; stand-in predictor."""
from __future__ import annotations

import numpy as np
import pytest

from flows.annotate.memory_store import MemoryStore
from flows.project.config import SimulatorParams
from flows.accounting.degraded_predictor import DegradedTruthPredictor
from flows.accounting.ranker import FEATURES, QualityRanker, feature_matrix, spearman, targets
from flows.accounting.simulator import ImageLog, RoundLog, load_logs, save_logs, simulate_batch
from tinyloop.annotations import Click, ImageLabels, LabelSet

from tests.fixtures_workload import CLASSES, grid_truth


@pytest.fixture(scope="module")
def simulated():
    rng = np.random.default_rng(0)
    truth = LabelSet(CLASSES, [
        grid_truth(int(rng.integers(3, 25)), lambda i: float(rng.uniform(5, 30)),
                   image=f"s{k:03d}") for k in range(100)])
    predict = DegradedTruthPredictor(truth, seed=1)
    pre = LabelSet(CLASSES, [ImageLabels(im.image, predict(im.id, [])) for im in truth])
    store = MemoryStore(pre)   # the FileStore path is covered by test_simulator_clicks
    logs = simulate_batch(store, 1, truth, predict,
                          SimulatorParams(rounds=2, clicks_per_round=2, seed=5),
                          progress=False)
    return truth, predict, logs


def test_ranker_predicts_remaining_error_on_unseen_images(simulated):
    _, _, logs = simulated
    ranker = QualityRanker(seed=0).fit(logs[:50])
    rho = spearman(ranker.predict(logs[50:]), targets(logs[50:]))
    assert rho > 0.4, rho
    # a ranker trained on shuffled targets must do clearly worse: the signal is real
    shuffled = [ImageLog(**{**vars(a), "remaining_error": b.remaining_error})
                for a, b in zip(logs[:50], np.random.default_rng(1).permutation(logs[:50]))]
    rho_null = spearman(QualityRanker(seed=0).fit(shuffled).predict(logs[50:]),
                        targets(logs[50:]))
    assert rho_null < rho - 0.2


def test_review_order_puts_the_worst_images_first(simulated):
    _, _, logs = simulated
    ranker = QualityRanker(seed=0).fit(logs)
    order = ranker.review_order(logs)
    assert sorted(order) == sorted(log.image_id for log in logs)
    err = {log.image_id: log.remaining_error for log in logs}
    top, bottom = order[:20], order[-20:]
    assert np.mean([err[i] for i in top]) > np.mean([err[i] for i in bottom])
    assert set(ranker.importances()) == set(FEATURES)


def test_features_use_only_process_signals():
    log = ImageLog("x", [RoundLog(1, 3, 5, 0.7, 0.2, 4.0, 9.0, errors_seen=3),
                         RoundLog(2, 1, 6, 0.8, 0.1, 2.0, 2.0, errors_seen=1)],
                   gt_objects=10, remaining_error=4, start_error=8, start_boxes=4,
                   start_mean_score=0.6)
    row = dict(zip(FEATURES, feature_matrix([log])[0]))
    assert row == {"clicks_last_round": 1, "rounds": 2, "total_clicks": 4, "change_last": 0.1,
                   "click_dist_mean": 2.0, "click_dist_max": 2.0, "boxes": 6,
                   "mean_score": 0.8, "box_change": 2}
    # nothing the ground truth knows leaks in
    other = ImageLog(**{**vars(log), "gt_objects": 99, "remaining_error": 0,
                        "start_error": 0})
    other.rounds = [RoundLog(**{**vars(r), "errors_seen": 50}) for r in log.rounds]
    assert (feature_matrix([other]) == feature_matrix([log])).all()


def test_ranker_and_logs_round_trip_through_files(simulated, tmp_path):
    _, _, logs = simulated
    save_logs(logs[:10], tmp_path / "logs.json")
    assert load_logs(tmp_path / "logs.json") == logs[:10]
    ranker = QualityRanker(n_estimators=20).fit(logs)
    ranker.save(tmp_path / "ranker.joblib")
    again = QualityRanker.load(tmp_path / "ranker.joblib")
    assert np.allclose(again.predict(logs), ranker.predict(logs))
    with pytest.raises(ValueError, match="at least 2"):
        QualityRanker().fit(logs[:1])


def test_degraded_predictor_is_deterministic_and_clicks_fix_objects(simulated):
    truth, _, _ = simulated
    predict = DegradedTruthPredictor(truth, miss=1.0, relabel=0, false_positives=0,
                                     fix=1.0, spread=0.0, vary=0.0)
    im = truth.images[0]
    assert predict(im.id, []) == []                 # every object missed
    g = im.annotations[0]
    out = predict(im.id, [Click(*g.box.center, g.category)])
    assert [(a.category, a.box) for a in out] == [(g.category, g.box)]
    assert out[0].provenance.source == "click_refined"
    noisy = DegradedTruthPredictor(truth, seed=3)
    assert noisy(im.id, []) == DegradedTruthPredictor(truth, seed=3)(im.id, [])
    for a in noisy(im.id, []):
        assert a.box.problem(im.image.width, im.image.height) is None


def test_filestore_process_log_gives_the_simulator_features(tmp_path, simulated):
    """People's batches (FileStore history) and simulations feed the ranker identically."""
    from flows.annotate.file_store import FileStore
    from flows.accounting.ranker import review_queue
    truth, predict, logs = simulated
    sub = LabelSet(truth.categories, truth.images[:8])
    pre = LabelSet(sub.categories, [ImageLabels(im.image, predict(im.id, [])) for im in sub])
    store = FileStore(tmp_path)
    store.open_batch(1, pre)
    sim_logs = simulate_batch(store, 1, sub, predict,
                              SimulatorParams(rounds=2, clicks_per_round=2, seed=5),
                              progress=False)
    from_files = [store.process_log(im.id) for im in sub]
    assert np.allclose(feature_matrix(from_files), feature_matrix(sim_logs))
    assert feature_matrix(sim_logs)[:, 0].sum() > 0          # clicks were made
    ranker = QualityRanker(n_estimators=20).fit(logs)
    assert review_queue(store, [im.id for im in sub], ranker) == \
        ranker.review_order(sim_logs)
