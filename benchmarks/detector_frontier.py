"""The detector frontier: what each detector size learns per CPU-second on HIT-UAV.

The loop's detector lacks training steps, not labels (docs/benchmarks/c3det_pretrained.md,
"Images or steps?"), and on a 2-core CPU the steps are bought with CPU-seconds. This trains
the plain detector at several sizes (`VARIANTS`: FPN / RPN width, box-head width, RoIs per
image, RPN proposals in training, frozen backbone stages) on the HIT-UAV train split at
several CPU budgets (epochs), and records per run:
- train CPU-seconds (time.process_time of the training process) and CPU-seconds per crop;
- mAP@0.5 and AP@0.5 of objects under 20 px (sqrt(w*h)) on the 48 val images of
  c3det_pretrained.py;
- the drawing time saved (WT, IoU 0.5) on 96 other val images, its boxes shown from the score
  `flows.min_score: auto` picks on the 48 (as benchmarks/wt_by_train_images.py).

    .venv/bin/python benchmarks/detector_frontier.py speed          # CPU-s per crop, side by side
    .venv/bin/python benchmarks/detector_frontier.py train --model fpn64 --epochs 10
    .venv/bin/python benchmarks/detector_frontier.py report         # JSON + plot + page

Writes benchmarks/results/detector_frontier.json (`rows`: model, default, train_images,
epochs, train_cpu_s, cpu_s_per_crop, map50, ap_small, wt_pct, ...; `speed`: the side-by-side
cost per crop), docs/img/detector_frontier.png and docs/benchmarks/detector_frontier.md.
`TINYLOOP_MACHINE` names the machine in the results.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

from c3det.config import C3DetParams, EvalParams, TrainParams  # noqa: E402
from common import DATA, load_hituav, resolved_dtype, split, train_and_score  # noqa: E402

WORK = REPO / "data/benchmarks/detector_frontier"
RESULT = REPO / "benchmarks/results/detector_frontier.json"
PLOT = REPO / "docs/img/detector_frontier.png"
PAGE = REPO / "docs/benchmarks/detector_frontier.md"
MACHINE = os.environ.get("TINYLOOP_MACHINE", "2-core AMD EPYC (AVX512-BF16, no AMX), 24 GiB, "
                                             "no GPU (dev box)")
SMALL = "<20"           # the AP bucket of objects under 20 px sqrt(w*h) (size_buckets [20])

# Each candidate: C3DetParams fields over the CPU schedule's (roi_batch_size 128). "today" is
# the detector before the size params existed (torchvision's widths).
VARIANTS: dict[str, dict] = {
    "today": {"fpn_channels": 256, "box_head_dim": 1024},
    "fpn128": {"fpn_channels": 128, "box_head_dim": 1024},
    "fpn64": {"fpn_channels": 64, "box_head_dim": 1024},
    "fpn64_head256": {"fpn_channels": 64, "box_head_dim": 256},
    "fpn64_p500": {"fpn_channels": 64, "box_head_dim": 1024, "rpn_proposals_train": 500},
    "fpn64_frozen8": {"fpn_channels": 64, "box_head_dim": 1024, "freeze_through_stride": 8},
    "fpn64_head256_roi64_frozen8": {"fpn_channels": 64, "box_head_dim": 256,
                                    "roi_batch_size": 64, "freeze_through_stride": 8},
    "fpn64_lf64": {"fpn_channels": 64, "box_head_dim": 1024, "lf_channels": 64},
    "full_cut": {"fpn_channels": 64, "box_head_dim": 256, "roi_batch_size": 64,
                 "freeze_through_stride": 8, "rpn_proposals_train": 500},
}
CPU_SCHEDULE = {"roi_batch_size": 128}


def variant_params(name: str, epochs: int, seed: int, amp_dtype: str = "auto") -> C3DetParams:
    """The plain detector `name` on the CPU schedule: 192 px crops, batch 4, SGD 0.01, 50
    warm-up steps, the lr x0.1 for the last quarter of the epochs."""
    drop = max(1, math.ceil(0.75 * epochs)) if epochs > 1 else 1
    precision = {"amp": False} if amp_dtype == "float32" else {"amp_dtype": amp_dtype}
    train = TrainParams(epochs=epochs, batch_size=4, lr=0.01, crop_size=192, warmup_iters=50,
                        lr_steps=[drop], seed=seed, **precision)
    return C3DetParams(**{**CPU_SCHEDULE, **VARIANTS[name]}, train=train,
                       eval=EvalParams(click_steps=[0], sessions=1, seed=0,
                                       size_buckets=[20.0]))


def is_default(name: str) -> bool:
    """Whether `name`'s size is what C3DetParams() builds (RoIs per image are the schedule's)."""
    defaults = C3DetParams()
    return all(getattr(defaults, k) == v for k, v in VARIANTS[name].items()
               if k != "roi_batch_size")


def run_dir(a) -> Path:
    return WORK / f"{a.model}_n{a.train_images}_e{a.epochs}_seed{a.seed}"


def cmd_train(a) -> None:
    torch.set_num_threads(a.threads)
    labels = load_hituav(WORK)
    p = variant_params(a.model, a.epochs, a.seed, a.amp_dtype)
    out = run_dir(a)
    train_set = split(labels, "train", a.train_images, 0)
    row = train_and_score(train_set, split(labels, "val", 48, 1), p, out, a.model)
    crops = len(train_set.images) * a.epochs
    row.update({"model": a.model, "size": VARIANTS[a.model], "weights": p.weights,
                "dtype": resolved_dtype(p.train), "train_images": len(train_set.images),
                "epochs": a.epochs, "seed": a.seed, "crops": crops,
                "cpu_s_per_crop": row["train_cpu_s"] / crops,
                "ap_small": row["by_size"].get(SMALL), "threads": a.threads,
                "schedule": {"epochs": a.epochs, **dataclasses.asdict(p.train)},
                "date": time.strftime("%Y-%m-%d"), "machine": MACHINE})
    row.update(_work_saved(out, row, labels))
    (out / "result.json").write_text(json.dumps(row, indent=1))
    print(json.dumps({k: row[k] for k in ("model", "epochs", "train_cpu_s", "map50",
                                          "ap_small", "wt_pct")}), flush=True)


def _work_saved(out: Path, row: dict, labels) -> dict:
    """WT saved on the 96 measure images at the auto score cut (wt_by_train_images.py)."""
    from flows.project.config import WorkloadParams
    from common import measure_model, val_sets
    (out / "result.json").write_text(json.dumps(row))   # measure_model reads the run's row
    choose, measure = val_sets(labels, 96)
    m = measure_model(out, choose, measure, WorkloadParams())
    return {"wt_pct": m["wt_reduction_pct"], "seconds_saved_pct": m["seconds_reduction_pct"],
            "min_score": m["min_score"], "wt_hindsight_pct": m["hindsight"]["wt_reduction_pct"]}


def cmd_speed(a) -> None:
    """CPU-seconds per crop of every variant, interleaved step by step in one process, so
    that the load of the shared machine falls on all of them alike."""
    from c3det.data import DetectionDataset, collate
    from c3det.model import build_model
    from c3det.train import autocast_dtype
    torch.set_num_threads(a.threads)
    labels = split(load_hituav(WORK), "train", 64, 0)
    names = a.models or list(VARIANTS)
    models, opts = {}, {}
    for name in names:
        p = variant_params(name, 1, 0, a.amp_dtype)
        torch.manual_seed(0)
        models[name] = build_model(a.kind, len(labels.categories), p).train()
        opts[name] = torch.optim.SGD([q for q in models[name].parameters() if q.requires_grad],
                                     lr=0.001, momentum=0.9)
    tp = variant_params(names[0], 1, 0, a.amp_dtype).train
    dtype = autocast_dtype(tp, torch.device("cpu"))
    data = DetectionDataset(labels, DATA, tp)
    cpu = {n: 0.0 for n in names}
    idx = np.random.default_rng(0).permutation(len(data))
    for step in range(a.steps + 1):
        images, targets = collate([data[int(i)] for i in idx[step * 4:(step + 1) * 4]])
        clicks = [t["clicks"] for t in targets]
        boxes = [{k: t[k] for k in ("boxes", "labels", "clicked")} for t in targets]
        for name in names:
            c0 = time.process_time()
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = sum(models[name](images, clicks, boxes).values())
            opts[name].zero_grad()
            loss.backward()
            opts[name].step()
            if step:                       # step 0 warms up the allocator and kernels
                cpu[name] += time.process_time() - c0
    crops = a.steps * 4
    base = cpu.get("today")
    rows = [{"model": n, "cpu_s_per_crop": cpu[n] / crops,
             "vs_today": cpu[n] / base if base else None} for n in names]
    doc = json.loads(RESULT.read_text()) if RESULT.exists() else {"rows": []}
    doc["speed" if a.kind == "plain" else f"speed_{a.kind}"] = {
                    "date": time.strftime("%Y-%m-%d"), "machine": MACHINE, "kind": a.kind,
                    "dtype": str(dtype or torch.float32).removeprefix("torch."),
                    "crop": tp.crop_size, "batch": 4, "steps": a.steps, "threads": a.threads,
                    "rows": rows}
    RESULT.write_text(json.dumps(doc, indent=1) + "\n")
    for r in rows:
        print(f"{r['model']:32s} {r['cpu_s_per_crop']:.3f} CPU-s/crop "
              f"({r['vs_today']:.2f}x today)" if r["vs_today"] else r)


def cmd_report(a) -> None:
    """Rows recorded in the JSON, replaced or joined by the runs under WORK (not versioned)."""
    doc = json.loads(RESULT.read_text()) if RESULT.exists() else {"rows": []}
    rows = {(r["model"], r["train_images"], r["epochs"], r["seed"]): r for r in doc["rows"]}
    for f in WORK.glob("*/result.json"):
        r = json.loads(f.read_text())
        if "wt_pct" in r:
            rows[(r["model"], r["train_images"], r["epochs"], r["seed"])] = _row(r)
    doc["rows"] = sorted(rows.values(), key=lambda r: (r["model"], r["train_cpu_s"]))
    for r in doc["rows"]:
        r["default"] = r["model"] in VARIANTS and is_default(r["model"])
    doc.update(benchmark="detector_frontier", date=time.strftime("%Y-%m-%d"),
               dataset="HIT-UAV (CC BY 4.0): train split -> train, val split -> test")
    RESULT.write_text(json.dumps(doc, indent=1) + "\n")
    _plot(doc["rows"])
    old = PAGE.read_text() if PAGE.exists() else ""
    readings = old[old.index("\n## Reading"):] if "\n## Reading" in old else ""
    PAGE.write_text(markdown(doc) + readings)     # the written readings stay
    print(PAGE.read_text())


def _row(r: dict) -> dict:
    keep = ("model", "size", "train_images", "epochs", "seed", "dtype", "train_cpu_s",
            "cpu_s_per_crop", "map50", "ap_small", "wt_pct", "seconds_saved_pct",
            "min_score", "wt_hindsight_pct", "threads", "date", "machine")
    return {k: r.get(k) for k in keep}


def markdown(doc: dict) -> str:
    lines = ["# Detector frontier: accuracy per CPU-second", "",
             "Script: `benchmarks/detector_frontier.py`; results: "
             "`benchmarks/results/detector_frontier.json`. The plain detector (ImageNet Lite0 "
             "backbone) at each size, trained on HIT-UAV train images with 192 px crops, batch "
             "4, 128 RoIs per image unless the size says otherwise, 1 torch thread; mAP@0.5 and "
             "AP@0.5 under 20 px on 48 val images, WT saved on 96 other val images from the "
             "auto score cut (as [wt_by_train_images.md](wt_by_train_images.md)).", "",
             f"![frontier](../img/{PLOT.name})", "",
             "| model | default | images | epochs | dtype | train CPU-s | CPU-s / crop | "
             "mAP@0.5 | AP<20px | WT saved % | machine |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        small = "-" if r["ap_small"] is None else f"{r['ap_small']:.1f}"
        lines.append(f"| {r['model']} | {'yes' if r.get('default') else ''} | "
                     f"{r['train_images']} | {r['epochs']} | {r['dtype']} | "
                     f"{r['train_cpu_s']:.0f} | {r['cpu_s_per_crop']:.3f} | {r['map50']:.1f} | "
                     f"{small} | {r['wt_pct']:+.1f} | {r['machine']} |")
    for key in ("speed_plain_all", "speed", "speed_c3det"):   # speed_plain_all: a first run
        if doc.get(key):
            lines += _speed_lines(doc[key])
    return "\n".join(lines) + "\n"


def _speed_lines(s: dict) -> list[str]:
    return ["", f"## Cost per crop, side by side: {s.get('kind', 'plain')} "
                f"({s['machine']}, {s['date']})", "",
            f"One process, the variants' training steps interleaved ({s['steps']} steps of "
            f"{s['batch']} {s['crop']} px crops each, {s['dtype']}, {s['threads']} thread), "
            "so the machine's load falls on all alike.", "",
            "| model | CPU-s / crop | vs today |", "|---|---|---|"] + [
        f"| {r['model']} | {r['cpu_s_per_crop']:.3f} | {r['vs_today']:.2f}x |"
        for r in s["rows"]]


def _plot(rows: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "map50", "mAP@0.5 (48 val images)"),
                           (axes[1], "wt_pct", "WT saved on 96 val images (%)")):
        for model in sorted({r["model"] for r in rows}):
            pts = sorted((r["train_cpu_s"], r[key]) for r in rows if r["model"] == model)
            default = any(r.get("default") for r in rows if r["model"] == model)
            ax.plot(*zip(*pts), marker="o", linewidth=2.5 if default else 1,
                    label=model + (" (default)" if default else ""))
        ax.set_xlabel("train CPU-seconds")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train, evaluate and score one variant at one budget")
    t.add_argument("--model", choices=list(VARIANTS), required=True)
    t.add_argument("--epochs", type=int, required=True, help="the CPU budget, in epochs")
    t.add_argument("--train-images", type=int, default=1200)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    t.add_argument("--amp-dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    s = sub.add_parser("speed", help="CPU-seconds per crop of each variant, side by side")
    s.add_argument("--models", nargs="*", choices=list(VARIANTS))
    s.add_argument("--steps", type=int, default=8)
    s.add_argument("--kind", choices=["plain", "c3det"], default="plain",
                   help="the detector kind (c3det: simulated clicks, the click branch)")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--amp-dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    sub.add_parser("report", help="collect the runs into the JSON, the plot and the page")
    a = ap.parse_args()
    {"train": cmd_train, "speed": cmd_speed, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
