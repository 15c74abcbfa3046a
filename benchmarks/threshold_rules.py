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
flows.auto_track_record since 2026-12-03), and two that trust the pool over the held-out
images once model n-1 has a track record (tried 2026-12-03, not adopted): `track only` (the
best score of model n-1 on batch n) and `calibrated` (model n's held-out curve shifted, score
by score, by how far model n-1's held-out curve missed its track record). Every rule falls
back to the held-out best for model 1, which has no track record.
Writes benchmarks/results/threshold_rules.json and prints a table; `--from-json RESULT`
replays the rules on the curves recorded in RESULT (no forward, no project needed) and adds
the projects given.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from flows import model_policy  # noqa: E402
from flows.project.project import Project  # noqa: E402
from flows.accounting.workload import NONE_SHOWN, best_threshold, saving  # noqa: E402
from tinyloop.cocofile import read_labels  # noqa: E402

RESULT = REPO / "benchmarks/results/threshold_rules.json"


def realized(p, n: int) -> list[dict]:
    """Model n's savings per score on batch n+1."""
    truth = read_labels(p.layout.labels(n + 1))
    kept = p.layout.scored_predictions(n + 1)
    scored = read_labels(kept) if kept.exists() else None
    return model_policy.savings_by_threshold(p, p.layout.model(n), truth, scored)


def veto_model(held: list[dict], track: list[dict] | None, prev_held: list[dict] | None,
               gain: float) -> float:
    """The held-out choice, hidden when model n-1 from that score cost time on batch n."""
    chosen = best_threshold(held, gain)
    row = next((r for r in track or [] if r["min_score"] == chosen), None)
    return NONE_SHOWN if row is not None and saving(row) < 0.0 else chosen


def calibrated(held: list[dict], track: list[dict] | None, prev_held: list[dict] | None,
               gain: float) -> float:
    """Held-out best after adding, per score, model n-1's (batch n - held-out) gap."""
    if not track or not prev_held:
        return best_threshold(held, gain)
    gap = {t["min_score"]: saving(t) - saving(h) for t, h in zip(track, prev_held)}
    shifted = [{"min_score": r["min_score"], "wt_reduction_pct": saving(r) + gap[r["min_score"]],
                "seconds_reduction_pct": saving(r) + gap[r["min_score"]]} for r in held]
    return best_threshold(shifted, gain)


RULES = {
    "none": lambda held, track, prev_held, gain: best_threshold(held, gain),
    "veto model": veto_model,
    "veto scores": lambda held, track, prev_held, gain: best_threshold(held, gain, track),
    "track only": lambda held, track, prev_held, gain: best_threshold(track or held, gain),
    "calibrated": calibrated,
}


def replay(name: str, root: Path) -> dict:
    p = Project.open(root)
    gain = p.params.flows.auto_min_gain_pct
    models = [n for n in p.layout.labeled_batches()[:-1] if p.layout.threshold(n).exists()]
    curves = {n: realized(p, n) for n in models}
    rows = [{"model": n, "held_out": json.loads(p.layout.threshold(n).read_text())[
                 "wt_by_min_score"], "track_record": curves.get(n - 1), "realized": curves[n]}
            for n in models]
    return {"name": name, "project": str(root), "gain": gain, "models": decide(rows, gain)}


def decide(rows: list[dict], gain: float) -> list[dict]:
    """Each rule's score and realized saving, added to each row (one per model, in order)."""
    prev_held = None
    for row in rows:
        for rule, choose in RULES.items():
            score = choose(row["held_out"], row["track_record"], prev_held, gain)
            at = next((r for r in row["realized"] if r["min_score"] == score), None)
            row[rule] = {"min_score": score, "saving": saving(at) if at else 0.0}
        prev_held = row["held_out"]
    return rows


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
    ap.add_argument("projects", nargs="*", metavar="NAME=PROJECT")
    ap.add_argument("--from-json", type=Path, metavar="RESULT",
                    help="replay on the curves recorded in RESULT (e.g. the last result)")
    a = ap.parse_args()
    runs = json.loads(a.from_json.read_text())["runs"] if a.from_json else []
    for run in runs:
        decide(run["models"], run.get("gain", 2.0))   # 2.0: the default, before it was kept
    runs += [replay(*item.split("=", 1)) for item in a.projects]
    RESULT.write_text(json.dumps({"benchmark": "threshold_rules",
                                  "date": time.strftime("%Y-%m-%d"), "runs": runs}, indent=1))
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
