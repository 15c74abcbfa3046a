"""Active selection on HIT-UAV (#27): does letting the current model choose the next batch
save annotators more work than the fixed orders?

    nice -n 10 .venv/bin/python benchmarks/active_selection.py [--smoke]
        [--strategies uncertainty diversity hybrid work] [--baselines random dissimilar]
        [--batches 4] [--batch-size 50] [--seeds 0 1] [--set KEY=VALUE ...]

Every run is the `simulate` flow in its own project (benchmarks/work/active-<name>-s<seed>),
with the same training per model (SETTING), the same pool (HIT-UAV train, 2008 images),
and mAP@0.5 on the held-out val split. A strategy re-ranks the candidates of the
dissimilar order (order.select.candidate_factor x batch size of them) after each retraining;
the baselines are the fixed orders (order.select.strategy fixed). All strategies and
baselines run with the first seed; the strategy with the best cumulative WT reduction
(incl. clicks) and random then run with every further seed.

Per run and batch: cumulative WT reduction (IoU 0.5), cumulative time reduction incl.
clicks, mAP@0.5, the selection's seconds and its share of the iteration's compute. Per run:
labelled images needed to reach random's final mAP. Targets (issue #27): best strategy cum
WT >= random + 5 points; its final mAP >= random's with >= 25 % fewer labelled images;
selection <= 20 % of an iteration's compute on the CPU.

Writes benchmarks/results/active_selection.json (rows [{strategy, seed, batches,
labeled_images, cum_wt_pct, final_map50, select_s_per_iter}] plus the per-batch curves),
docs/img/active_selection.png and docs/benchmarks/active_selection.md (--out NAME: NAME.*).
`--smoke`: the bundled 60-image sample, batches of 8, 2 iterations of one epoch, one
strategy and random: checks the script end to end in minutes (numbers mean nothing).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from common import CPU_LOOP, same_first_batch, simulate_in_new_project

REPO = Path(__file__).resolve().parents[1]
HITUAV = Path(os.environ.get("TINYLOOP_HITUAV", REPO.parent / "shared/datasets/hit-uav"))
SAMPLE = REPO / "data/sample/hit-uav"
WORK = REPO / "benchmarks" / "work"
MACHINE = os.environ.get("TINYLOOP_MACHINE", "2-core CPU, 24 GiB, no GPU (dev box)")
BASE_ORDER = "dissimilar"  # the order whose head the strategies draw candidates from

SETTING = CPU_LOOP  # the same training per model for every run
SMOKE = {**SETTING, "order.first_batch_size": 8, "order.batch_size": 8, "flows.iterations": 2,
         "c3det.train.epochs": 1, "c3det.train.lr_steps": [1], "flows.warm_start_epochs": 1,
         "c3det.train.crop_size": 128, "flows.eval_max_images": 4,
         "order.select.candidate_factor": 2, "flows.min_score": 0.5}


def parse_sets(items: list[str]) -> dict:
    """`--set KEY=VALUE` arguments as params overrides (values parsed as YAML)."""
    import yaml
    return {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in items)}


def run_params(name: str, seed: int, setting: dict) -> dict:
    """The params of one run: a baseline is a fixed order, a strategy re-ranks BASE_ORDER."""
    from features.selection import strategy_names
    chosen = {"order.method": BASE_ORDER, "order.select.strategy": name} \
        if name in strategy_names() else {"order.method": name,
                                           "order.select.strategy": "fixed"}
    return {**setting, **chosen, "order.seed": seed, "c3det.train.seed": seed,
            "simulator.seed": seed, "project.seed": seed}


def run_one(name: str, seed: int, setting: dict, source: Path, shared: Path | None,
            first_model_from: str | None = None) -> dict:
    """The simulate flow in a fresh project; the pool and embeddings of `shared` reused.
    `first_model_from` (NAME:SEED): that run's model 1 reused (a strategy's batch 1 is its
    base order's, so its model 1 is the same training; checked after the run)."""
    from flows.accounting.report import batch_rows
    root = WORK / f"active-{name}-s{seed}"
    donor = WORK / "active-{}-s{}".format(*first_model_from.split(":")) \
        if first_model_from else None
    layout, wall = simulate_in_new_project(root, source, run_params(name, seed, setting),
                                           shared, donor / "models/iter-001" if donor else None)
    if donor is not None and not same_first_batch(root, donor):
        raise RuntimeError(f"{root}: batch 1 differs from {donor}'s, whose model 1 it reused")
    return {"strategy": name, "seed": seed, "root": str(root), "wall_s": round(wall, 1),
            "first_model_from": first_model_from,
            "per_batch": per_batch(layout, batch_rows(layout))}


def per_batch(layout, rows: list[dict]) -> list[dict]:
    """The curves: per batch the cumulative reductions, mAP, and the selection that chose
    the NEXT batch (iteration n's cost) against the iteration's compute."""
    out = []
    for r in rows:
        n = r["batch"]
        done = layout.state / f"iter-{n:03d}.done"
        timings = json.loads(done.read_text())["timings_s"] if done.exists() else {}
        trained = layout.model_dir(n) / "train.json"   # the training's own seconds, also
        if trained.exists() and "train" in timings:    # for a model 1 reused from a donor
            timings = {**timings, "train": json.loads(trained.read_text())["seconds"]}
        compute = sum(v for k, v in timings.items() if k not in ("version", "push"))
        record = layout.selection(n)
        sel = json.loads(record.read_text()) if record.exists() else {}
        out.append({"batch": n, "labeled_images": r["images_cum"],
                    "cum_wt_pct": r["wt_reduction_cum"],
                    "cum_time_incl_clicks_pct": r["seconds_reduction_cum"],
                    "wt_pct": r["wt_reduction"], "map50": r["map50"],
                    "chosen_by": r.get("chosen_by"),
                    "select_s": sel.get("seconds"), "images_scored": sel.get("images_scored"),
                    "iteration_compute_s": round(compute, 1),
                    "select_share_pct": round(100 * sel["seconds"] / compute, 1)
                    if sel and compute else None})
    return out


def summary_row(run: dict, random_final_map: float | None) -> dict:
    """The issue's row, plus the images needed to reach random's final mAP."""
    curve = run["per_batch"]
    last = curve[-1]
    selects = [b["select_s"] for b in curve if b["select_s"] is not None]
    shares = [b["select_share_pct"] for b in curve if b["select_share_pct"] is not None]
    reached = [b["labeled_images"] for b in curve if random_final_map is not None
               and b["map50"] is not None and b["map50"] >= random_final_map]
    return {"strategy": run["strategy"], "seed": run["seed"], "batches": len(curve),
            "labeled_images": last["labeled_images"], "cum_wt_pct": last["cum_wt_pct"],
            "cum_time_incl_clicks_pct": last["cum_time_incl_clicks_pct"],
            "final_map50": last["map50"],
            "select_s_per_iter": round(sum(selects) / len(selects), 2) if selects else 0.0,
            "select_share_pct_max": max(shares) if shares else 0.0,
            "images_to_random_final_map": reached[0] if reached else None}


def mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 3) if vals else None


def verdict(rows: list[dict], strategies: list[str]) -> dict:
    """The issue's targets for the best strategy against random (seed means)."""
    by = {}
    for r in rows:
        by.setdefault(r["strategy"], []).append(r)
    random = by.get("random", [])
    r_wt, r_map = mean([r["cum_wt_pct"] for r in random]), mean([r["final_map50"] for r in random])
    r_images = mean([r["labeled_images"] for r in random])
    tried = [s for s in strategies if s in by]
    if not tried or r_wt is None:
        return {"note": "no strategy or no random run recorded"}
    best = max(tried, key=lambda s: mean([r["cum_wt_pct"] for r in by[s]]) or -1e9)
    b_wt = mean([r["cum_wt_pct"] for r in by[best]])
    b_map = mean([r["final_map50"] for r in by[best]])
    b_reach = mean([r["images_to_random_final_map"] for r in by[best]])
    b_share = max(r["select_share_pct_max"] for r in by[best])
    return {"best_strategy": best, "best_cum_wt_pct": b_wt, "random_cum_wt_pct": r_wt,
            "wt_target_met": b_wt is not None and b_wt >= r_wt + 5,
            "best_final_map50": b_map, "random_final_map50": r_map,
            "best_images_to_random_map": b_reach, "random_labeled_images": r_images,
            "map_target_met": (b_map is not None and r_map is not None and b_map >= r_map
                               and b_reach is not None and b_reach <= 0.75 * r_images),
            "select_share_pct_max": b_share, "cost_target_met": b_share <= 20.0}


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), dpi=100)
    for r in runs:
        c = r["per_batch"]
        x = [b["labeled_images"] for b in c]
        label = f"{r['strategy']} s{r['seed']}"
        axes[0].plot(x, [b["cum_time_incl_clicks_pct"] for b in c], "o-", label=label)
        axes[1].plot(x, [b["map50"] or 0 for b in c], "o-", label=label)
        axes[2].plot(x, [b["select_s"] or 0 for b in c], "o-", label=label)
    for ax, title in zip(axes, ["cumulative time reduction incl. clicks (%)",
                                "mAP@0.5 on HIT-UAV val", "selection seconds per iteration"]):
        ax.set_title(title)
        ax.set_xlabel("labelled images")
        ax.grid(alpha=.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def page(doc: dict, out: str) -> str:
    """docs/benchmarks/active_selection.md: the rows, the verdict, the curves."""
    lines = ["# Active selection on HIT-UAV (#27)", "",
             f"Machine: {doc['machine']}. Pool: {doc['pool']}; mAP on {doc['eval']}. "
             f"Setting: `{json.dumps(doc['setting'])}`." + (" SMOKE RUN: numbers mean "
                                                             "nothing." if doc["smoke"] else ""),
             "", "| strategy | seed | batches | labelled | cum WT % | cum time incl. clicks % "
             "| final mAP@.5 | select s / iter | max select share % | images to random's "
             "final mAP |", "|" + "---|" * 10]
    for r in doc["rows"]:
        lines.append("| " + " | ".join(cell(v) for v in (
            r["strategy"], r["seed"], r["batches"], r["labeled_images"], r["cum_wt_pct"],
            r["cum_time_incl_clicks_pct"], r["final_map50"], r["select_s_per_iter"],
            r["select_share_pct_max"], r["images_to_random_final_map"])) + " |")
    lines += ["", "Targets: " + json.dumps(doc["verdict"]), "",
              f"![curves](../img/{out}.png)", ""]
    reading = REPO / f"benchmarks/notes/{out}_reading.md"   # written by hand after a run
    if reading.exists():
        lines += [reading.read_text().strip(), ""]
    return "\n".join(lines)


def cell(v) -> str:
    """A table cell: a dash for nothing, floats to 2 decimals."""
    return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategies", nargs="+",
                    default=["uncertainty", "diversity", "hybrid", "work"])
    ap.add_argument("--baselines", nargs="+", default=["random", "dissimilar"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1],
                    help="the first for every run, the rest for the winner and random")
    ap.add_argument("--runs", nargs="+", metavar="NAME:SEED",
                    help="run exactly these (e.g. random:0 work:1) instead of the plan above; "
                         "lets two processes share a 2-core box, --combine joins them")
    ap.add_argument("--first-model-from", metavar="NAME:SEED",
                    help="--runs that are strategies reuse this run's finished model 1 "
                         "(waiting for it): their batch 1 is the base order's")
    ap.add_argument("--combine", nargs="+", metavar="NAME",
                    help="run nothing: join the runs of results/<NAME>.json into --out "
                         "(rows, verdict, plot, page)")
    ap.add_argument("--batches", type=int, help="iterations (default: 4; smoke 2)")
    ap.add_argument("--batch-size", type=int, help="images per batch (default 50; smoke 8)")
    ap.add_argument("--smoke", action="store_true",
                    help="the 60-image sample, tiny schedule, first strategy + random only")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="more params.yaml overrides")
    ap.add_argument("--out", default="active_selection")
    args = ap.parse_args()
    if args.combine:
        docs = [json.loads((REPO / f"benchmarks/results/{n}.json").read_text())
                for n in args.combine]
        doc = {**docs[0], "runs": [r for d in docs for r in d["runs"]]}
        finish(doc, args.strategies, args.out, plots=True)
        print(json.dumps(doc["verdict"], indent=1))
        return 0
    setting = dict(SMOKE if args.smoke else SETTING)
    if args.batches:
        setting["flows.iterations"] = args.batches
    if args.batch_size:
        setting["order.first_batch_size"] = setting["order.batch_size"] = args.batch_size
    setting.update(parse_sets(args.set))
    strategies = args.strategies[:1] if args.smoke else args.strategies
    baselines = ["random"] if args.smoke else args.baselines
    seeds = args.seeds[:1] if args.smoke else args.seeds
    source = SAMPLE if args.smoke else HITUAV
    doc = {"benchmark": "active_selection", "machine": MACHINE, "dataset": str(source),
           "pool": "sample (48 train images)" if args.smoke else "HIT-UAV train split",
           "eval": f"val split, first {setting['flows.eval_max_images']} images",
           "setting": setting, "smoke": args.smoke, "base_order": BASE_ORDER,
           "runs": [], "rows": [], "verdict": {}}
    shared = None

    def record(run: dict) -> None:
        nonlocal shared
        shared = shared or Path(run["root"])
        doc["runs"].append(run)
        finish(doc, strategies, args.out, plots=False)
        print(f"== {run['strategy']} seed {run['seed']}: {doc['rows'][-1]}", flush=True)

    if args.runs:
        from features.selection import strategy_names
        for name, seed in (r.split(":") for r in args.runs):
            donor = args.first_model_from if name in strategy_names() else None
            record(run_one(name, int(seed), setting, source, shared, donor))
    else:
        for name in ["random", *[b for b in baselines if b != "random"], *strategies]:
            record(run_one(name, seeds[0], setting, source, shared))
        winner = doc["verdict"].get("best_strategy")
        for seed in seeds[1:]:
            for name in ["random", winner]:
                record(run_one(name, seed, setting, source, shared))
    finish(doc, strategies, args.out, plots=True)
    print(json.dumps(doc["verdict"], indent=1))
    return 0


def finish(doc: dict, strategies: list[str], out: str, plots: bool) -> None:
    """Rows and verdict from doc's runs, written to results/<out>.json; with `plots` also
    the curves and the page."""
    random_map = mean([r["per_batch"][-1]["map50"] for r in doc["runs"]
                       if r["strategy"] == "random"])
    doc["rows"] = [summary_row(r, random_map) for r in doc["runs"]]
    doc["verdict"] = verdict(doc["rows"], strategies)
    path = REPO / f"benchmarks/results/{out}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    if plots:
        plot(doc["runs"], REPO / f"docs/img/{out}.png")
        (REPO / f"docs/benchmarks/{out}.md").write_text(page(doc, out))


if __name__ == "__main__":
    sys.exit(main())
