"""Replay `flows.min_score: auto`'s rules on finished HIT-UAV loop projects: which score
would each rule have shown model n's boxes from, and what would that have saved on batch
n+1 (the batch it pre-annotated)?

    .venv/bin/python benchmarks/threshold_rules.py NAME=PROJECT [NAME=PROJECT ...]
        e.g. long-random=benchmarks/work/loop-random

Per model n, three curves over the candidate scores (flows.model_policy.THRESHOLDS), each
`saving` = min(WT reduction, time reduction) %:
- held out: threshold.json's `wt_by_min_score` (the held-out val images);
- track record: model n-1 on batch n (= the realized curve of model n-1);
- realized: model n on batch n+1, from the boxes it scored when it pre-annotated that batch
  (`scored_predictions.json`; older projects: one forward per image).
Realized is close, not exact, for a rule that would have shown other boxes than the run
did: an accepted box keeps the model's coordinates in the corrected labels.

Rules: `none` (held-out best, no veto), `veto model` (the track record hides the model when
its held-out score cost time on batch n: flows.auto_track_record until 2026-12-03),
`veto scores` (the held-out best among the scores that did not cost time on batch n:
flows.auto_track_record since 2026-12-03).
Writes benchmarks/results/threshold_rules.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flows import model_policy, steps  # noqa: E402
from flows.accounting.workload import NONE_SHOWN, best_threshold, saving  # noqa: E402
from tinyloop.cocofile import read_labels  # noqa: E402

RESULT = REPO / "benchmarks/results/threshold_rules.json"


def realized(p, n: int) -> list[dict]:
    """Model n's savings per score on batch n+1."""
    truth = read_labels(p.layout.labels(n + 1))
    kept = p.layout.scored_predictions(n + 1)
    scored = read_labels(kept) if kept.exists() else None
    return model_policy.savings_by_threshold(p, p.layout.model(n), truth, scored)


def veto_model(held: list[dict], track: list[dict] | None, gain: float) -> float:
    """The held-out choice, hidden when model n-1 from that score cost time on batch n."""
    chosen = best_threshold(held, gain)
    row = next((r for r in track or [] if r["min_score"] == chosen), None)
    return NONE_SHOWN if row is not None and saving(row) < 0.0 else chosen


RULES = {
    "none": lambda held, track, gain: best_threshold(held, gain),
    "veto model": veto_model,
    "veto scores": lambda held, track, gain: best_threshold(held, gain, track),
}


def replay(name: str, root: Path) -> dict:
    p = steps.Project.open(root)
    gain = p.params.flows.auto_min_gain_pct
    models = [n for n in p.layout.labeled_batches()[:-1] if p.layout.threshold(n).exists()]
    curves = {n: realized(p, n) for n in models}
    rows = []
    for n in models:
        held = json.loads(p.layout.threshold(n).read_text())["wt_by_min_score"]
        track = curves.get(n - 1)
        row = {"model": n, "held_out": held, "track_record": track, "realized": curves[n]}
        for rule, choose in RULES.items():
            score = choose(held, track, gain)
            at = next((r for r in curves[n] if r["min_score"] == score), None)
            row[rule] = {"min_score": score, "saving": saving(at) if at else 0.0}
        rows.append(row)
    return {"name": name, "project": str(root), "models": rows}


def table(runs: list[dict]) -> str:
    lines = ["| run | model -> batch | " + " | ".join(f"{r}: score, saving %" for r in RULES)
             + " |", "|---|---|" + "---|" * len(RULES)]
    totals = {r: 0.0 for r in RULES}
    for run in runs:
        for m in run["models"]:
            cells = []
            for r in RULES:
                s = m[r]["min_score"]
                cells.append(f"{'none' if s == NONE_SHOWN else s}, {m[r]['saving']:+.1f}")
                totals[r] += m[r]["saving"]
            lines.append(f"| {run['name']} | {m['model']} -> {m['model'] + 1} | "
                         + " | ".join(cells) + " |")
    lines.append("| **sum** | | " + " | ".join(f"**{totals[r]:+.1f}**" for r in RULES) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("projects", nargs="+", metavar="NAME=PROJECT")
    a = ap.parse_args()
    runs = [replay(*item.split("=", 1)) for item in a.projects]
    RESULT.write_text(json.dumps({"benchmark": "threshold_rules",
                                  "date": time.strftime("%Y-%m-%d"), "runs": runs}, indent=1))
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
