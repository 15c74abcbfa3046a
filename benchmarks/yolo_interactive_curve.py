"""mAP@0.5 vs clicks on HIT-UAV for the one-stage interactive detector (C3Det fusion in a
YOLO neck, c3det.yolo.interactive), next to the two-stage Faster R-CNN curves.

    .venv/bin/python benchmarks/yolo_interactive_curve.py train     # resumes per epoch
    .venv/bin/python benchmarks/yolo_interactive_curve.py eval
    .venv/bin/python benchmarks/yolo_interactive_curve.py report    # JSON + plot + page
    .venv/bin/python benchmarks/yolo_interactive_curve.py all       # the three in turn
    .venv/bin/python benchmarks/yolo_interactive_curve.py all --smoke --threads 1

Train on HIT-UAV's train split (ImageSets/Main/train.txt), test on whole val-split images
chosen as benchmarks/c3det_map_vs_clicks.py chooses them (same seed: the same 16 images),
clicks 0, 1, 5, 10, 20 (one random object per image per click, `--sessions` orders).
The default schedule is a reduced CPU one (400 train images, 192 px crops, 30 epochs of
yolov8n-p2 from random weights, AdamW): see `schedule()`; the results JSON records it with
the machine (`TINYLOOP_MACHINE` names it). `report` writes
benchmarks/results/yolo_interactive_curve.json, docs/img/yolo_interactive_curve.png and
docs/benchmarks/yolo_interactive.md, drawing the two-stage curves of
benchmarks/results/c3det_map_vs_clicks.json beside this one.

`--smoke` runs the whole pipeline on 8 train images, 1 epoch and 2 test images in minutes,
in its own work dir, and writes its JSON/plot/page there (never over the real results).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

from c3det.config import C3DetParams, EvalParams, TrainParams  # noqa: E402
from common import (DATA, load_hituav, precision_fields,  # noqa: E402
                                 resolved_dtype, split)  # same data, same picks

RESULT = REPO / "benchmarks/results/yolo_interactive_curve.json"
PLOT = REPO / "docs/img/yolo_interactive_curve.png"
DOC = REPO / "docs/benchmarks/yolo_interactive.md"
TWO_STAGE = REPO / "benchmarks/results/c3det_map_vs_clicks.json"
PRECISION = REPO / "benchmarks/results/yolo_interactive_precision.json"
PRECISION_HEADING = "## bfloat16 training on the CPU"   # the page section `precision` owns
BACKBONE = REPO / "benchmarks/results/yolo_interactive_backbone.json"
BACKBONE_HEADING = "## ImageNet EfficientNet-Lite0 backbone"   # the section `backbone` owns
NAME = "YOLO + C3Det fusion (one-stage)"


def machine() -> str:
    if os.environ.get("TINYLOOP_MACHINE"):
        return os.environ["TINYLOOP_MACHINE"]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core {platform.machine()} CPU, {gpu}"


def schedule(a) -> dict:
    return {"smoke": a.smoke, "cfg": a.cfg, "train_images": a.train_images, "crop": a.crop,
            "batch_size": a.batch, "epochs": a.epochs, "optimizer": a.optimizer,
            "lr": a.lr, "warmup_iters": a.warmup, "lr_steps": a.lr_steps,
            "init_from": a.init, "freeze_detector": a.freeze, "lf_backbone": a.lf_backbone,
            "lf_channels": a.lf_channels, "test_images": a.test_images,
            "click_steps": a.steps, "sessions": a.sessions, "threads": a.threads,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "amp_dtype": resolved_dtype(params(a).train),
            "clicks": "K = min(U{0..20}, #objects) per sample, 25% click-free samples"}


def params(a) -> C3DetParams:
    return C3DetParams(
        train=TrainParams(epochs=a.epochs, batch_size=a.batch, crop_size=a.crop,
                          warmup_iters=a.warmup, lr_steps=a.lr_steps, seed=0,
                          **precision_fields(a.amp_dtype)),
        eval=EvalParams(click_steps=a.steps, sessions=a.sessions, seed=0))


def cmd_train(a) -> None:
    from c3det.yolo.train_interactive import train_interactive
    work = Path(a.work)
    labels = split(load_hituav(work), "train", a.train_images, 0)
    out, p = work / "run", params(a)
    deadline, t_epoch, cpu0 = _deadline(a.deadline), 0.0, time.process_time()
    for epoch in range(p.train.epochs):        # one call per epoch: a restart resumes
        if (out / "last.pt").exists() and \
                torch.load(out / "last.pt", weights_only=True)["epoch"] >= epoch:
            continue
        if deadline and time.time() + t_epoch > deadline:
            print(f"deadline reached before epoch {epoch + 1}; stopping", flush=True)
            break
        t0 = time.time()
        r = train_interactive(labels, DATA, out, p, cfg=a.cfg, optimizer=a.optimizer,
                              lr=a.lr, init_from=a.init, freeze=a.freeze,
                              stop_after_epoch=epoch, lf_backbone=a.lf_backbone,
                              lf_channels=a.lf_channels)
        t_epoch = time.time() - t0
        print(json.dumps(r["epochs"][-1]), flush=True)
    from c3det.yolo.train_interactive import default_lr
    lr = a.lr or default_lr(a.optimizer, len(labels.categories), p)
    (out / "schedule.json").write_text(json.dumps(
        {**schedule(a), "lr": lr, "train_cpu_s": time.process_time() - cpu0}, indent=1))


def run_variant(a, work: str, **overrides) -> dict:
    """Train and score the run with `overrides` (schedule args) in `work`, unless done there:
    its train CPU-seconds, final loss and mAP vs clicks."""
    variant = argparse.Namespace(**{**vars(a), "work": work, **overrides})
    if not (Path(work) / "eval.json").exists():
        cmd_train(variant)
        cmd_eval(variant)
    ev = json.loads((Path(work) / "eval.json").read_text())
    sched = json.loads((Path(work) / "run/schedule.json").read_text())
    return {**overrides, "train_cpu_s": sched.get("train_cpu_s"), "steps": ev["steps"],
            "map_mean": ev["map_mean"], "final_loss": ev["train_log"][-1]["loss"]}


def write_comparison(a, name: str, result: Path, rows: list[dict], varied: str,
                     lines) -> None:
    """The JSON of an A/B (`rows` differ only in `varied`) and its section of the page."""
    doc = {"benchmark": name, "machine": machine(),
           "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "schedule": {k: v for k, v in schedule(a).items() if k != varied}, "runs": rows}
    out = Path(a.work) / result.name if a.smoke else result
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    section = lines(doc)
    if DOC.exists() and not a.smoke:   # the page's curve stays; this section is new
        DOC.write_text(put_section(DOC.read_text(), section))
    print("\n".join(section))


def put_section(page: str, section: list[str]) -> str:
    """`page` with the "## " section headed section[1] replaced by `section` (or appended)."""
    heading = section[1]
    parts = page.rstrip("\n").split("\n## ")
    body = "\n".join(section).strip("\n")
    kept = [parts[0]] + ["## " + p for p in parts[1:] if not ("## " + p).startswith(heading)]
    return "\n\n".join(x.rstrip("\n") for x in kept) + "\n\n" + body + "\n"


def cmd_precision(a) -> None:
    """The same run in float32 and in bfloat16 (work dirs <work>-float32, -bfloat16):
    train CPU-seconds and mAP vs clicks, into benchmarks/results/yolo_interactive_precision.json."""
    rows = [run_variant(a, f"{a.work}-{dtype}", amp_dtype=dtype)
            for dtype in ("float32", "bfloat16")]
    write_comparison(a, "yolo_interactive_precision", PRECISION, rows, "amp_dtype",
                     precision_lines)


def cmd_backbone(a) -> None:
    """The float32 run of `precision` (<work>-float32, yolov8n-p2.yaml from random init) and
    the same with the ImageNet EfficientNet-Lite0 backbone (<work>-lite0-float32,
    yolov8n-lite0-p2.yaml), into benchmarks/results/yolo_interactive_backbone.json."""
    rows = [run_variant(a, f"{a.work}{suffix}-float32", cfg=cfg, amp_dtype="float32")
            for cfg, suffix in (("yolov8n-p2.yaml", ""), ("yolov8n-lite0-p2.yaml", "-lite0"))]
    write_comparison(a, "yolo_interactive_backbone", BACKBONE, rows, "cfg", backbone_lines)


def _ab_table(doc: dict, key: str, label: str) -> list[str]:
    s, rows = doc["schedule"], doc["runs"]
    return [f"`{doc['date'][:10]}`, {doc['machine']}: {s['train_images']} train images, "
            f"{s['epochs']} epochs of {s['crop']} px crops, batch {s['batch_size']}, "
            f"{s['threads']} thread(s); mAP@0.5 on {s['test_images']} val images, "
            f"{s['sessions']} session(s).", "",
            f"| {label} | train CPU-s | final loss | " +
            " | ".join(f"{k} clicks" for k in rows[0]["steps"]) + " |",
            "|---|---|---|" + "---|" * len(rows[0]["steps"])] + [
            f"| {r[key]} | {r['train_cpu_s']:.0f} | {r['final_loss']:.3f} | " +
            " | ".join(f"{m:.2f}" for m in r["map_mean"]) + " |" for r in rows]


def precision_lines(doc: dict) -> list[str]:
    """The float32 / bfloat16 comparison of `cmd_precision`, for the page."""
    f, b = doc["runs"]
    table = _ab_table(doc, "amp_dtype", "dtype")
    return ["", PRECISION_HEADING, "",
            "The same run in float32 and in bfloat16 autocast (`c3det.train.amp_dtype`). "
            + table[0], *table[1:],
            "", f"bfloat16 needs {f['train_cpu_s'] / b['train_cpu_s']:.2f}x fewer CPU-seconds; "
            "mAP difference (bfloat16 - float32) per click count: " + ", ".join(
                f"{mb - mf:+.1f}" for mf, mb in zip(f["map_mean"], b["map_mean"])) + "."]


def backbone_lines(doc: dict) -> list[str]:
    """The random-init / ImageNet Lite0 comparison of `cmd_backbone`, for the page."""
    r, i = doc["runs"]
    table = _ab_table(doc, "cfg", "model yaml")
    return ["", BACKBONE_HEADING, "",
            "The same run (float32) with ultralytics' YOLOv8-P2 backbone from random init and "
            "with the ImageNet EfficientNet-Lite0 backbone of the PyPI wheel under the same "
            "neck and head (c3det/yolo/lite_backbone.py). " + table[0], *table[1:], "",
            "ImageNet Lite0 - random init per click count: " + ", ".join(
                f"{mi - mr:+.1f}" for mr, mi in zip(r["map_mean"], i["map_mean"]))
            + f"; train CPU-seconds {i['train_cpu_s'] / r['train_cpu_s']:.2f}x."]


def cmd_eval(a) -> None:
    from c3det.evaluate import map_vs_clicks
    from c3det.yolo.interactive import load
    work = Path(a.work)
    test = split(load_hituav(work), "val", a.test_images, 1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, meta = load(work / "run/model.pt", map_location=device)
    t0 = time.time()
    r = map_vs_clicks(model, test, DATA, params(a).eval, name=NAME)
    r["eval_seconds"], r["trained_epochs"] = time.time() - t0, meta.get("epoch", -1) + 1
    log = work / "run/metrics.jsonl"
    r["train_log"] = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    (work / "eval.json").write_text(json.dumps(r, indent=1))
    print([round(x, 2) for x in r["map_mean"]], flush=True)


def cmd_report(a) -> None:
    from c3det.evaluate import plot_curves
    work = Path(a.work)
    mine = json.loads((work / "eval.json").read_text())
    two = json.loads(TWO_STAGE.read_text()) if TWO_STAGE.exists() else {"models": []}
    trained = work / "run/schedule.json"   # what train ran with, not report's arguments
    sched = {**schedule(a), "amp_dtype": "float32",  # runs before amp_dtype: CUDA-only AMP
             **json.loads(trained.read_text())} if trained.exists() else schedule(a)
    sched.update(test_images=mine["images"], click_steps=mine["steps"],
                 sessions=mine["sessions"])
    doc = {"benchmark": "yolo_interactive_curve", "machine": machine(),
           "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "dataset": "HIT-UAV (train split -> train, val split -> test)",
           "schedule": sched, "model": mine,
           "two_stage": {"file": str(TWO_STAGE.relative_to(REPO)), "date": two.get("date"),
                         "machine": two.get("machine"), "schedule": two.get("schedule")}}
    result, plot, page = (work / RESULT.name, work / PLOT.name, work / DOC.name) if a.smoke \
        else (RESULT, PLOT, DOC)
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_text(json.dumps(doc, indent=1))
    plot_curves([mine] + [_two_stage_name(r) for r in two["models"]], plot,
                title=f"HIT-UAV val ({mine['images']} images): one-stage vs two-stage")
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(markdown(doc, two["models"], os.path.relpath(plot, page.parent)))
    print(f"wrote {result}, {plot}, {page}")


def _two_stage_name(r: dict) -> dict:
    return {**r, "name": f"{r['name']} (two-stage)"}


def _cell(r: dict, k: int) -> str:
    if k not in r["steps"]:
        return "–"
    j = r["steps"].index(k)
    return f"{r['map_mean'][j]:.2f} ± {r['map_std'][j]:.2f}"


def markdown(doc: dict, two_stage: list[dict], plot: str) -> str:
    """docs/benchmarks/yolo_interactive.md from the results."""
    s, m, t = doc["schedule"], doc["model"], doc["two_stage"]
    steps = sorted(set(m["steps"]).union(*(r["steps"] for r in two_stage)))
    log = m.get("train_log") or []
    ts = t.get("schedule") or {}
    out = ["# One-stage interactive detector: mAP@0.5 vs clicks on HIT-UAV", "",
           f"Generated by `benchmarks/yolo_interactive_curve.py report` on {doc['date']}; "
           f"machine: {doc['machine']}. Raw numbers: "
           "`benchmarks/results/yolo_interactive_curve.json`"
           + (" (SMOKE RUN: pipeline check only, the numbers mean nothing)" if s["smoke"]
              else "") + ".", "",
           f"![mAP vs clicks]({plot})", "",
           "## What was run", "",
           f"- Model: `{s['cfg']}` (ultralytics {_ul_version()}) from "
           + (f"`{s['init_from']}`" if s["init_from"] else "random weights (offline: no "
              "pretrained YOLO)")
           + (", detector frozen (only the click branch trained)" if s["freeze_detector"]
              else "")
           + f"; the C3Det fusion (C3 + Late Fusion `{s['lf_backbone']}` with "
           f"{s['lf_channels']} channels, UEL) on every Detect input (P2-P5); "
           "c3det.yolo.interactive.",
           f"- Train: {s['train_images']} random HIT-UAV train-split images with objects "
           f"(seed 0), {s['crop']} px crops (half holding an object), flips, batch "
           f"{s['batch_size']}, {s['optimizer']} lr {s['lr'] or 'auto'} ({s['warmup_iters']} "
           f"warm-up steps, x0.1 at epochs {s['lr_steps'] or 'none'}), {s['epochs']} epochs "
           f"({m.get('trained_epochs', '?')} done), ultralytics' loss and EMA, "
           f"{s['clicks']}; device {s['device']}, {s['threads']} torch thread(s).",
           f"- Test: {m['images']} whole val-split images ({m['objects']} objects; the images "
           f"benchmarks/c3det_map_vs_clicks.py tests on), clicks {m['steps']}, "
           f"{m['sessions']} session(s), mean ± std over sessions.",
           f"- Two-stage reference: `{t['file']}` ({t.get('date')}; {ts.get('train_images')} "
           f"train images, {ts.get('crop')} px crops, {ts.get('epochs')} epochs, "
           f"{ts.get('backbone')} Faster R-CNN from scratch, {ts.get('sessions')} sessions). "
           "Different schedules: compare shapes (the gain per click), not absolute levels.",
           "", "## mAP@0.5 (%) vs clicks per image", "",
           "| model | " + " | ".join(f"{k} clicks" for k in steps) + " |",
           "|---|" + "---|" * len(steps),
           f"| **{m['name']}** | " + " | ".join(_cell(m, k) for k in steps) + " |"]
    out += [f"| {r['name']} (two-stage) | " + " | ".join(_cell(r, k) for k in steps) + " |"
            for r in two_stage]
    if log:
        last = log[-1]
        parts = ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k != "loss" and "loss" in k)
        out += ["", f"Training: {len(log)} epoch(s), last epoch mean loss {last['loss']:.3f} "
                f"({parts}), "
                f"{last['images_per_s']:.2f} crops/s; evaluation took "
                f"{m.get('eval_seconds', 0):.0f} s."]
    names = list(m["by_size"])
    out += ["", f"## AP by object size (sqrt(w*h) px), at 0 and {m['steps'][-1]} clicks", "",
            "| model | " + " | ".join(f"{n} @0 / @{m['steps'][-1]}" for n in names) + " |",
            "|---|" + "---|" * len(names)]
    for r in [m] + two_stage:
        out.append(f"| {r['name']} | " + " | ".join(
            f"{_f(r['by_size'][n][0])} / {_f(r['by_size'][n][-1])}" for n in names) + " |")
    out += ["", "Evaluation rules: those of docs/benchmarks/c3det_accuracy.md (pycocotools "
            "mAP@0.5, ignore regions dropped, clicks at box centres with the true class)."]
    if PRECISION.exists() and not s["smoke"]:
        out += precision_lines(json.loads(PRECISION.read_text()))
    return "\n".join(out + [""])


def _f(x) -> str:
    return "–" if x is None else f"{x:.1f}"


def _ul_version() -> str:
    from c3det.yolo.offline import ultralytics
    return ultralytics().__version__


def _deadline(hhmm: str | None) -> float | None:
    if not hhmm:
        return None
    now = dt.datetime.now(dt.timezone.utc)
    h, m = map(int, hhmm.split(":"))
    return now.replace(hour=h, minute=m, second=0, microsecond=0).timestamp()


SMOKE = {"train_images": 8, "epochs": 1, "crop": 128, "batch": 4, "warmup": 1,
         "lr_steps": [], "test_images": 2, "steps": [0, 1, 5], "sessions": 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=["train", "eval", "report", "all", "precision",
                                      "backbone"],
                    help="precision: the run in float32 and bfloat16, compared; backbone: "
                         "its float32 run with yolov8n-lite0-p2.yaml (ImageNet) beside it")
    ap.add_argument("--smoke", action="store_true", help="tiny schedule, own work dir")
    ap.add_argument("--work", default=None, help="default data/benchmarks/yolo_interactive")
    ap.add_argument("--deadline", default=None, help="UTC HH:MM: no epoch starts that "
                    "would end after it")
    ap.add_argument("--cfg", default="yolov8n-p2.yaml")
    ap.add_argument("--init", default=None, help="plain YOLO weights for the detector part")
    ap.add_argument("--freeze", action="store_true", help="train only the click branch")
    ap.add_argument("--lf-backbone", default="light", choices=["light", "resnet18"])
    ap.add_argument("--lf-channels", type=int, default=64)
    ap.add_argument("--train-images", type=int, default=400)
    ap.add_argument("--crop", type=int, default=192)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    ap.add_argument("--lr", type=float, default=None, help="default: ultralytics' auto lr")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--lr-steps", type=int, nargs="*", default=[24])
    ap.add_argument("--test-images", type=int, default=16)
    ap.add_argument("--steps", type=int, nargs="+", default=[0, 1, 5, 10, 20])
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--amp-dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                    help="training's autocast dtype (c3det.train.amp_dtype)")
    a = ap.parse_args()
    if a.smoke:
        for k, v in SMOKE.items():
            setattr(a, k, v)
    a.work = a.work or str(REPO / "data/benchmarks" /
                           ("yolo_interactive_smoke" if a.smoke else "yolo_interactive"))
    torch.set_num_threads(a.threads)
    phases = ["train", "eval", "report"] if a.phase == "all" else [a.phase]
    for phase in phases:
        {"train": cmd_train, "eval": cmd_eval, "report": cmd_report,
         "precision": cmd_precision, "backbone": cmd_backbone}[phase](a)


if __name__ == "__main__":
    main()
