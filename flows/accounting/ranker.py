"""Review priority: predict each image's remaining error from the annotation process alone.

Seed 004 §4.2 ranks finished annotations with a random forest over process signals (clicks
in the last round, round number, change between rounds, click distances) and shows people
the worst first. Here the same idea works per image on a detection batch. Features (one row
per image, from a `flows.accounting.simulator.ImageLog`; nothing from the ground truth, no pixels,
no class names):

    clicks_last_round   clicks in the image's last round (0: accepted without a click)
    rounds              rounds with at least one click
    total_clicks
    change_last         1 - mean best IoU between the boxes before and after the last round
    click_dist_mean     px from the last round's clicks to the nearest box shown before them
    click_dist_max      (large: the annotator pointed at objects the model had not found)
    boxes               model boxes shown at the end
    mean_score          their mean score
    box_change          boxes at the end minus boxes before the first click

Target: `remaining_error`, the box edits still needed after the last round (what a reviewer
would have to fix). `QualityRanker.review_order` sorts images worst first.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from flows.accounting.simulator import ImageLog
from tinyloop.atomic import write_bytes_atomic

FEATURES = ("clicks_last_round", "rounds", "total_clicks", "change_last", "click_dist_mean",
            "click_dist_max", "boxes", "mean_score", "box_change")


def features(log: ImageLog) -> np.ndarray:
    """(len(FEATURES),) float64 process signals of one image."""
    last = log.rounds[-1] if log.rounds else None
    boxes = last.boxes if last else log.start_boxes
    return np.array([
        last.clicks if last else 0,
        len(log.rounds),
        sum(r.clicks for r in log.rounds),
        last.change if last else 0.0,
        last.click_dist_mean if last else 0.0,
        last.click_dist_max if last else 0.0,
        boxes,
        last.mean_score if last else log.start_mean_score,
        boxes - log.start_boxes,
    ], dtype=np.float64)


def feature_matrix(logs: list[ImageLog]) -> np.ndarray:
    """(N, len(FEATURES)) float64."""
    if not logs:
        return np.zeros((0, len(FEATURES)))
    return np.stack([features(log) for log in logs])


def targets(logs: list[ImageLog]) -> np.ndarray:
    return np.array([log.remaining_error for log in logs], dtype=np.float64)


class QualityRanker:
    """A scikit-learn RandomForestRegressor from process signals to remaining error."""

    def __init__(self, n_estimators: int = 200, min_samples_leaf: int = 3, seed: int = 0):
        from sklearn.ensemble import RandomForestRegressor
        self.model = RandomForestRegressor(n_estimators=n_estimators,
                                           min_samples_leaf=min_samples_leaf,
                                           random_state=seed, n_jobs=1)
        self.fitted = False

    def fit(self, logs: list[ImageLog]) -> "QualityRanker":
        if len(logs) < 2:
            raise ValueError(f"the quality ranker needs at least 2 annotated images to "
                             f"learn from, got {len(logs)}; simulate a batch first")
        self.model.fit(feature_matrix(logs), targets(logs))
        self.fitted = True
        return self

    def predict(self, logs: list[ImageLog]) -> np.ndarray:
        """(N,) predicted remaining error per image."""
        if not self.fitted:
            raise RuntimeError("QualityRanker.predict before fit; train it on simulated or "
                               "past batches first")
        if not logs:
            return np.zeros(0)
        return self.model.predict(feature_matrix(logs))

    def review_order(self, logs: list[ImageLog]) -> list[str]:
        """Image ids, the most likely still wrong first (ties keep the input order)."""
        pred = self.predict(logs)
        order = np.argsort(-pred, kind="stable")
        return [logs[i].image_id for i in order]

    def importances(self) -> dict[str, float]:
        return dict(zip(FEATURES, map(float, self.model.feature_importances_)))

    def save(self, path: str | Path) -> Path:
        import joblib
        buf = io.BytesIO()
        joblib.dump(self.model, buf)
        return write_bytes_atomic(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> "QualityRanker":
        import joblib
        out = cls()
        out.model = joblib.load(path)
        out.fitted = True
        return out


def spearman(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Spearman rank correlation (ties averaged); nan when either side is constant."""
    from scipy.stats import spearmanr
    if np.ptp(predicted) == 0 or np.ptp(truth) == 0:
        return float("nan")
    return float(spearmanr(predicted, truth).statistic)


def review_queue(store, image_ids: list[str], ranker: QualityRanker) -> list[str]:
    """Order a batch corrected by people for review, worst first.

    `store` must keep the process (`process_log(image_id)`, as FileStore does): clicks by
    round and every model output recorded with them.
    """
    return ranker.review_order([store.process_log(i) for i in image_ids])


# --- training on past batches and ordering a batch's review --------------------------------

def batch_training_logs(layout, batch: int) -> list[ImageLog]:
    """Process logs with their true remaining error, for a finished batch.

    A simulated batch has them in ``simulation.json``. For a batch people corrected in a
    FileStore, the log comes from the store's click/prediction history and the remaining
    error is the number of box edits between the model's last output (``refined.json``) and
    the corrected labels: exactly what the simulator measures against the ground truth.
    """
    from flows.annotate.file_store import FileStore
    from flows.accounting.simulator import edits_needed, load_logs
    from tinyloop.cocofile import read_labels
    sim = layout.batch_dir(batch) / "simulation.json"
    if sim.exists():
        return load_logs(sim)
    store = FileStore(layout.root)
    if not layout.labels(batch).exists() or not store.refined_path(batch).exists():
        return []
    refined = read_labels(store.refined_path(batch)).by_id()
    logs = []
    for item in read_labels(layout.labels(batch)):
        log = store.process_log(item.id)
        log.remaining_error = edits_needed(refined[item.id].annotations, item)
        logs.append(log)
    return logs


def order_batch_for_review(layout, batch: int, train_batches: list[int] | None = None,
                           seed: int = 0) -> dict:
    """Rank batch `batch` (in a FileStore) for review and write ``review.json`` atomically.

    Trained on `train_batches` (default: every other batch with labels). With fewer than 20
    training images the order falls back to a rule (most clicks, then lowest mean score
    first) and says so in ``method``.
    """
    from flows.annotate.file_store import FileStore
    from tinyloop.atomic import write_json_atomic
    store = FileStore(layout.root)
    ids = store.batch_images(batch)
    logs = [store.process_log(i) for i in ids]
    if train_batches is None:
        train_batches = [n for n in layout.labeled_batches() if n != batch]
    train = [log for n in train_batches for log in batch_training_logs(layout, n)]
    if len(train) >= 20:
        ranker = QualityRanker(seed=seed).fit(train)
        predicted = ranker.predict(logs)
        method = "random forest"
    else:
        X = feature_matrix(logs)
        col = {name: i for i, name in enumerate(FEATURES)}
        predicted = X[:, col["total_clicks"]] + (1 - X[:, col["mean_score"]]) if len(logs) \
            else np.zeros(0)
        method = f"rule (total clicks + 1 - mean score): only {len(train)} training images"
    order = np.argsort(-predicted, kind="stable")
    out = {"batch": batch, "method": method, "trained_on_batches": train_batches,
           "training_images": len(train),
           "order": [ids[i] for i in order],
           "predicted_error": {ids[i]: round(float(predicted[i]), 4) for i in order}}
    write_json_atomic(layout.batch_dir(batch) / "review.json", out)
    return out
