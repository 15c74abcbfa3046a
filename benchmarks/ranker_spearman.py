"""Quality ranker on HIT-UAV: Spearman correlation of predicted vs true remaining error.

    .venv/bin/python benchmarks/ranker_spearman.py [--checkpoint models/iter-003/model.pt]

The simulated annotator (flows/accounting/simulator.py, 3 rounds x 3 clicks, Gaussian click noise)
corrects every HIT-UAV image through a MemoryStore; each image's process log (clicks per
round, prediction change, click distances, box count, mean score) is a ranker input and its
remaining error after the last round (box edits still needed) the target. The ranker is
trained on the train split (1200 images) and tested on the val split (290 images), and - as
Benenson et al. 2019 asks - also tested under a click-noise model and an error rate it was not
trained with.

The detector: with --checkpoint, c3det's Predictor on that model; otherwise
flows.accounting.degraded_predictor.DegradedTruthPredictor, the ground truth degraded at known rates
(NOT a trained detector; the numbers then describe the ranker on that error process).
Writes benchmarks/results/ranker_spearman.json and docs/img/workload_ranker_review.png
(with --checkpoint: ranker_spearman_model.json and workload_ranker_review_model.png).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from common import BASE_RATES, DATA, import_headers_only, whole_split  # noqa: E402
from flows.annotate.memory_store import MemoryStore  # noqa: E402
from flows.project.config import SimulatorParams  # noqa: E402
from flows.accounting.degraded_predictor import DegradedTruthPredictor  # noqa: E402
from flows.accounting.ranker import (FEATURES, QualityRanker, feature_matrix,  # noqa
                                     spearman, targets)
from flows.accounting.simulator import simulate_batch  # noqa: E402
from tinyloop.annotations import ImageLabels, LabelSet  # noqa: E402
from tinyloop.atomic import write_json_atomic  # noqa: E402

HARDER_RATES = dict(BASE_RATES, miss=0.4, relabel=0.2, jitter=0.15, false_positives=1.0)


def make_predictor(truth: LabelSet, rates: dict, seed: int, checkpoint: str | None,
                   root: Path, min_score: float = 0.3):
    if checkpoint is None:
        return DegradedTruthPredictor(truth, seed=seed, **rates)
    import torch
    from c3det.predict import Predictor
    torch.set_num_threads(2)
    predictor = Predictor(checkpoint, truth.categories, min_score=min_score)
    paths = {im.id: str(root / im.image.path) for im in truth}
    last: dict = {}   # one cached session (backbone features) for the image being annotated

    def predict(image_id, clicks):
        if last.get("id") != image_id:
            last.clear()
            last.update(id=image_id, session=predictor.session(paths[image_id]))
        return last["session"].set_clicks(list(clicks))
    return predict


def simulate(truth: LabelSet, predict, sim: SimulatorParams):
    pre = LabelSet(truth.categories,
                   [ImageLabels(im.image, predict(im.id, []), list(im.ignore)) for im in truth])
    store = MemoryStore(pre)
    return simulate_batch(store, 1, truth, predict, sim, progress=False)


def review_curve(pred: np.ndarray, err: np.ndarray) -> dict:
    """Share of all remaining error found when reviewing the top x of images."""
    fractions = np.linspace(0, 1, 21)
    total = max(err.sum(), 1e-9)

    def curve(order):
        c = np.concatenate([[0], np.cumsum(err[order])]) / total
        return [float(c[int(round(f * len(err)))]) for f in fractions]
    return {"fraction_reviewed": fractions.round(3).tolist(),
            "ranker": curve(np.argsort(-pred, kind="stable")),
            "oracle": curve(np.argsort(-err, kind="stable")),
            "random": fractions.round(3).tolist()}


def evaluate(ranker: QualityRanker, logs) -> dict:
    pred, err = ranker.predict(logs), targets(logs)
    X = feature_matrix(logs)
    single = {name: spearman(X[:, i], err) for i, name in enumerate(FEATURES)}
    top = np.argsort(-pred, kind="stable")[:max(1, len(logs) // 5)]
    return {"images": len(logs), "spearman": spearman(pred, err),
            "single_feature_spearman": single,
            "images_with_error_pct": float(100 * (err > 0).mean()),
            "mean_remaining_error": float(err.mean()),
            "error_found_in_top20pct": float(err[top].sum() / max(err.sum(), 1e-9)),
            "curve": review_curve(pred, err)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--checkpoint", help="c3det model; default: degraded-truth stand-in")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--min-score", type=float, default=0.3,
                    help="with --checkpoint: boxes below this score are not shown")
    ap.add_argument("--tests", help="comma-separated test names to run (default: all)")
    ap.add_argument("--max-train", type=int, help="use only the first N train images")
    ap.add_argument("--max-val", type=int, help="use only the first N val images")
    ap.add_argument("--out", type=Path, help="result JSON (default: benchmarks/results/"
                    "ranker_spearman.json, or ranker_spearman_model.json with --checkpoint)")
    args = ap.parse_args()
    suffix = "_model" if args.checkpoint else ""
    png = args.out.with_suffix(".png") if args.out else \
        REPO / f"docs/img/workload_ranker_review{suffix}.png"
    args.out = args.out or REPO / f"benchmarks/results/ranker_spearman{suffix}.json"
    start = time.perf_counter()
    labels = import_headers_only(args.data)
    train, val = whole_split(labels, "train"), whole_split(labels, "val")
    train.images, val.images = train.images[:args.max_train], val.images[:args.max_val]
    base = SimulatorParams()                 # sigma 3 px, 3 rounds x 3 clicks
    tests = {
        "same_noise": (BASE_RATES, base),
        "click_sigma_1": (BASE_RATES, replace(base, click_sigma=1.0)),
        "click_sigma_8": (BASE_RATES, replace(base, click_sigma=8.0)),
        "harder_errors": (HARDER_RATES, base),
        "one_round_of_5": (BASE_RATES, replace(base, rounds=1, clicks_per_round=5)),
    }
    if args.tests:
        unknown = set(args.tests.split(",")) - set(tests)
        if unknown:
            ap.error(f"unknown tests {sorted(unknown)}; known: {', '.join(tests)}")
        tests = {k: v for k, v in tests.items() if k in args.tests.split(",")}
    runs = []
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        train_logs = simulate(train, make_predictor(train, BASE_RATES, 100 + seed,
                                                    args.checkpoint, args.data,
                                                    args.min_score),
                              replace(base, seed=seed))
        ranker = QualityRanker(seed=seed).fit(train_logs)
        run = {"seed": seed, "train_images": len(train_logs),
               "importances": ranker.importances(), "tests": {}}
        for name, (rates, sim) in tests.items():
            logs = simulate(val, make_predictor(val, rates, 200 + seed, args.checkpoint,
                                                args.data, args.min_score),
                            replace(sim, seed=1000 + seed))
            run["tests"][name] = evaluate(ranker, logs)
        run["seconds"] = time.perf_counter() - t0
        runs.append(run)
        print(f"seed {seed}: " + ", ".join(f"{k} {v['spearman']:.3f}"
                                            for k, v in run["tests"].items()), flush=True)
    summary = {name: {"spearman_mean": float(np.mean([r["tests"][name]["spearman"]
                                                       for r in runs])),
                      "spearman_std": float(np.std([r["tests"][name]["spearman"]
                                                     for r in runs])),
                      "error_found_in_top20pct_mean": float(np.mean(
                          [r["tests"][name]["error_found_in_top20pct"] for r in runs])),
                      "best_single_feature": best_single(runs, name)}
               for name in tests}
    result = {
        "benchmark": "ranker_spearman",
        "machine": f"2-core CPU, 24 GiB, no GPU (dev box); {platform.processor() or 'cpu'}",
        "dataset": f"HIT-UAV ({args.data.name}): train {len(train)} images -> ranker, "
                   f"val {len(val)} images -> test",
        "predictor": args.checkpoint or "DegradedTruthPredictor (ground truth degraded at "
                                        "known rates; NOT a trained detector)",
        "predictor_rates": {"train_and_same_noise": BASE_RATES, "harder_errors": HARDER_RATES},
        "simulator": {"click_sigma": base.click_sigma, "rounds": base.rounds,
                      "clicks_per_round": base.clicks_per_round},
        "target": "remaining_error = box edits still needed after the last click round",
        "features": list(FEATURES), "seeds": args.seeds, "summary": summary, "runs": runs,
        "seconds": time.perf_counter() - start,
    }
    write_json_atomic(args.out, result)
    first = next(iter(runs[0]["tests"]))
    plot(runs[0]["tests"][first]["curve"], png)
    print(json.dumps(summary, indent=1))
    return 0


def best_single(runs: list[dict], test: str) -> list:
    """The one feature whose Spearman with the error is largest in size, mean over seeds."""
    mean = {f: float(np.nanmean([r["tests"][test]["single_feature_spearman"][f]
                                 for r in runs])) for f in FEATURES}
    return list(max(mean.items(), key=lambda kv: abs(kv[1]) if kv[1] == kv[1] else -1))


def plot(curve: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    x = curve["fraction_reviewed"]
    for key, style in (("oracle", "k--"), ("ranker", "C0-"), ("random", "C7:")):
        ax.plot(x, curve[key], style, label=key)
    ax.set_xlabel("share of images reviewed (ranked order)")
    ax.set_ylabel("share of remaining box errors found")
    ax.set_title("HIT-UAV val: review queue ordered by the ranker")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
