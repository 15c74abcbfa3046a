"""How much drawing a plain detector's boxes would save, by the number of images it learned
from: the link between the mAP of benchmarks/c3det_pretrained.py and the loop's WT target.

    .venv/bin/python benchmarks/wt_by_train_images.py run       # every trained model there
    .venv/bin/python benchmarks/wt_by_train_images.py report

For each model of c3det_pretrained.py (data/benchmarks/c3det_pretrained/*/model.pt):
1. every box it finds (no score cut) on two disjoint sets of HIT-UAV val images: the 48
   images its mAP is measured on (`choose`), and up to 96 other val images (`measure`);
2. the loop's `flows.min_score: auto` rule on `choose`: the score cut that saves the most by
   both WT and annotation time (flows.accounting.workload.best_threshold, no 2 % bar);
3. on `measure`, at that cut: the WT reduction vs drawing every box (the loop paper's WT at
   IoU 0.5, the project's cost model, params.yaml `workload`) and the time reduction (edits
   at their own prices plus a check of every image that shows a box). Also the best cut in
   hindsight on `measure`, an upper bound no rule reaches.

So a row reads: "a batch like these val images, pre-annotated by a detector trained on N
labeled images at this schedule, costs this much less than drawing it". No clicks: the
plain detector's boxes alone (clicks in the loop add their own cost and gain).

Writes benchmarks/results/wt_by_train_images.json, docs/img/wt_by_train_images.png and
docs/benchmarks/wt_by_train_images.md.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

from common import PRETRAINED_WORK as WORK  # noqa: E402
from common import load_hituav, measure_model, val_sets  # noqa: E402
from flows.accounting.workload import NONE_SHOWN  # noqa: E402
from flows.project.config import WorkloadParams  # noqa: E402

RESULT = REPO / "benchmarks/results/wt_by_train_images.json"
PLOT = REPO / "docs/img/wt_by_train_images.png"
PAGE = REPO / "docs/benchmarks/wt_by_train_images.md"
MACHINE = os.environ.get("TINYLOOP_MACHINE", "2-core CPU, 24 GiB, no GPU (dev box)")


def cmd_run(a) -> None:
    torch.set_num_threads(a.threads)
    labels = load_hituav(WORK)
    choose, measure = val_sets(labels, a.measure_images)
    cost = WorkloadParams()
    old = {r["run"]: r for r in json.loads(RESULT.read_text())["rows"]} if RESULT.exists() else {}
    rows = []
    for run in sorted(WORK.glob("*/model.pt")):
        run = run.parent
        if run.name in old and not a.again:
            rows.append(old[run.name])
            continue
        t0 = time.time()
        rows.append(measure_model(run, choose, measure, cost))
        r = rows[-1]
        print(f"{run.name}: mAP {r['map50']:.1f}, cut {r['min_score']}, WT "
              f"{r['wt_reduction_pct']:+.1f} %, time {r['seconds_reduction_pct']:+.1f} % "
              f"({time.time() - t0:.0f} s)", flush=True)
    RESULT.write_text(json.dumps({
        "benchmark": "wt_by_train_images", "date": time.strftime("%Y-%m-%d"),
        "machine": MACHINE, "cost": vars(cost),
        "choose_images": len(choose.images), "measure_images": len(measure.images),
        "measure_objects": sum(len(i.annotations) for i in measure.images),
        "rows": rows}, indent=1) + "\n")
    cmd_report(a)


def cmd_report(a) -> None:
    doc = json.loads(RESULT.read_text())
    rows = sorted(doc["rows"], key=lambda r: (r["weights"], r["epochs"] * r["train_images"],
                                              r["train_images"], r["seed"]))
    _plot(rows)
    lines = ["# Drawing saved by train images", "",
             f"Script: `benchmarks/wt_by_train_images.py`; results: "
             f"`benchmarks/results/wt_by_train_images.json`; {doc['machine']}, "
             f"{doc['date']}. The plain detectors of [c3det_pretrained.md]"
             "(c3det_pretrained.md) (same schedules, same names), each showing its boxes from the "
             f"score `flows.min_score: auto` picks on the {doc['choose_images']} mAP images, "
             f"measured on {doc['measure_images']} other val images "
             f"({doc['measure_objects']} objects): the share of drawing time (WT, IoU 0.5) and "
             "of annotation time (edits plus a check of each image) it saves against drawing "
             "every box, no clicks. 'Hindsight': the best cut on those images themselves.", "",
             f"![WT by train images](../img/{PLOT.name})", "",
             "| init | dtype | N | epochs | mAP@0.5 | cut | WT saved % | time saved % | "
             "hindsight cut | hindsight WT % |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cut = "none shown" if r["min_score"] >= NONE_SHOWN else f"{r['min_score']:.2f}"
        h = r["hindsight"]
        lines.append(f"| {r['weights']} | {r['dtype']} | {r['train_images']} | {r['epochs']} | "
                     f"{r['map50']:.1f} | {cut} | {r['wt_reduction_pct']:+.1f} | "
                     f"{r['seconds_reduction_pct']:+.1f} | {h['min_score']:.2f} | "
                     f"{h['wt_reduction_pct']:+.1f} |")
    old = PAGE.read_text() if PAGE.exists() else ""
    readings = old[old.index("\n## Reading"):] if "\n## Reading" in old else ""
    PAGE.write_text("\n".join(lines) + "\n" + readings)   # the written readings stay
    print("\n".join(lines))


def _plot(rows: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for weights, marker in (("imagenet", "o"), ("none", "s")):
        for default, style in ((True, "-"), (False, "")):
            pts = sorted((r["train_images"], r["wt_reduction_pct"]) for r in rows
                         if r["weights"] == weights and (r["epochs"] == 4) == default)
            if pts:
                ax.plot(*zip(*pts), marker=marker, linestyle=style or "none",
                        label=f"{weights}, " + ("4 epochs" if default else "longer schedules"))
    for r in rows:
        if r["epochs"] != 4:
            ax.annotate(f"{r['epochs']} epochs", (r["train_images"], r["wt_reduction_pct"]),
                        textcoords="offset points", xytext=(6, 4), fontsize=7)
    ax.axhline(60, color="grey", linestyle=":", label="issue target (60 %)")
    ax.set_xscale("log")
    ax.set_xlabel("train images (HIT-UAV)")
    ax.set_ylabel("WT saved on held-out val images (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="score every trained model not scored yet, then report")
    r.add_argument("--measure-images", type=int, default=96)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--again", action="store_true", help="re-score models already in the JSON")
    sub.add_parser("report", help="plot and page from the JSON")
    a = ap.parse_args()
    {"run": cmd_run, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
