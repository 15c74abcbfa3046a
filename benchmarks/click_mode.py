"""Click, don't draw (#30): how good is a box made from a centre click and the image alone
(no model), and what does centre-clicking missing objects save on batch 1?

1. Quality: every HIT-UAV val object outside DontCare is centre-clicked (Gaussian noise
   3 px, seed 0, and exact clicks) and c3det.image_click_box makes its box; IoU with the true
   box by size bucket and class, and the share at IoU >= 0.5 / 0.7. Priors and rankers learn
   only from train boxes: "prior" = the class's typical size (first 20 train boxes of the
   class) centred on the click; "hand" = the candidates ranked by the hand score (same
   prior); "ranker N" = the learned ranker after N train boxes (typical sizes from the same
   boxes).
2. Batch 1: the simulated annotator labels the first 100 train images (by id = flight order,
   and a random order) from nothing, drawing every box or centre-clicking every object
   (simulator.missing draw | click, accept_iou 0.5 and 0.7); the click-to-box learns from
   each finished image as it goes. Seconds from the workload model (flows.accounting.workload).

3. With a model (`--models LABEL=CHECKPOINT ...`): the App's "Boxes from clicks" path
   (flows.annotate.click_boxes: the model run once per image with every object's centre
   click, its box of the class containing the click, else the class size prior, else the
   image), e.g. the models after batch 1 and batch 4 of the CPU loop.
4. The CPU loop (`--loops RESULTS ...`, active_selection.py results whose runs centre-clicked
   their missing objects): per batch and order, the seconds in click mode and what the same
   batch would have cost had its missing objects been drawn (the workload's
   seconds_if_drawn: everything else about the batch is the same); added to `rows` with
   setting "cpu_loop", summed per order in `loop_cumulative`.

    .venv/bin/python benchmarks/click_mode.py    # 1 + 2: ~5 CPU-minutes, one thread
    .venv/bin/python benchmarks/click_mode.py --models "after batch 1=runs/m1.pt" \
        --loops active_selection                  # 3 + 4, kept beside 1 + 2
Writes benchmarks/results/click_mode.json, docs/img/click_mode_iou.png, and the page
docs/benchmarks/click_mode.md.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

from c3det.image_click_box import ClickBoxParams, ImageClickBoxer, gray_image  # noqa: E402
from common import DATA, load_hituav  # noqa: E402
from flows.accounting.simulator import CentreClicker, simulate_batch  # noqa: E402
from flows.accounting.workload import batch_workload, outside_ignore  # noqa: E402
from flows.annotate.file_store import FileStore  # noqa: E402
from flows.project.config import SimulatorParams, WorkloadParams  # noqa: E402
from tinyloop.annotations import ImageLabels, LabelSet  # noqa: E402

RESULT = REPO / "benchmarks/results/click_mode.json"
PLOT = REPO / "docs/img/click_mode_iou.png"
DOC = REPO / "docs/benchmarks/click_mode.md"
WORK = Path(os.environ.get("TINYLOOP_WORK", "/tmp/click_mode"))
BUCKETS = [("<12", 0, 12), ("12-20", 12, 20), ("20-32", 20, 32), (">32", 32, 1e9)]
CLASSES = ["Person", "Car", "Bicycle", "OtherVehicle"]
BATCH1_IMAGES = 100


def split_images(labels: LabelSet, name: str) -> list[ImageLabels]:
    return sorted((im for im in labels.images if im.image.metadata.get("split") == name),
                  key=lambda im: im.id)


def objects(images: list[ImageLabels]) -> list[tuple[ImageLabels, object]]:
    return [(im, a) for im in images for a in outside_ignore(im.annotations, im.ignore)]


def centre_clicks(objs, sigma: float, seed: int = 0) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    out = []
    for im, a in objs:
        dx, dy = rng.normal(0.0, sigma, 2) if sigma > 0 else (0.0, 0.0)
        out.append((min(max(a.box.center[0] + dx, 0), im.image.width),
                    min(max(a.box.center[1] + dy, 0), im.image.height)))
    return out


class Pixels:
    """Grayscale of one image at a time (objects come grouped by image)."""

    def __init__(self):
        self.id, self.gray = None, None

    def __call__(self, im: ImageLabels) -> np.ndarray:
        if im.id != self.id:
            self.id, self.gray = im.id, gray_image(DATA / im.image.path)
        return self.gray


def trained_boxer(train_objs, n: int | None, first_per_class: int | None) -> ImageClickBoxer:
    """A click-to-box that has seen the first n train boxes (its ranker learns from them when
    n is given) and the first `first_per_class` boxes of each class as typical sizes."""
    boxer = ImageClickBoxer(ClickBoxParams(ranker_max_boxes=max(n or 0, 100)))
    per_class: dict[str, int] = {}
    for im, a in train_objs:
        if per_class.get(a.category, 0) < (first_per_class or 10 ** 9):
            per_class[a.category] = per_class.get(a.category, 0) + 1
            boxer.prior.add(a.category, a.box.width, a.box.height)
    if n:
        pixels = Pixels()
        for im, a in train_objs[:n]:
            boxer.ranker.add(pixels(im), a.box.xyxy(), boxer.prior.of(a.category))
    return boxer


def measure(boxer, objs, clicks, method: str) -> np.ndarray:
    pixels = Pixels()
    ious = []
    for (im, a), (x, y) in zip(objs, clicks):
        gray = pixels(im)
        if method == "prior":
            w, h = boxer.prior.of(a.category)
            box = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
        else:
            box = boxer.box(gray, x, y, a.category)
        ious.append(a.box.iou(type(a.box)(*box)))
    return np.array(ious)


def table(ious: np.ndarray, sizes: np.ndarray, cats: np.ndarray) -> dict:
    def stats(mask):
        v = ious[mask]
        return {"objects": int(mask.sum()), "mean_iou": round(float(v.mean()), 3),
                "accepted_0.5_pct": round(100 * float(np.mean(v >= 0.5)), 1),
                "accepted_0.7_pct": round(100 * float(np.mean(v >= 0.7)), 1)}
    return {"all": stats(np.ones(len(ious), bool)),
            "by_size": {b: stats((sizes >= lo) & (sizes < hi)) for b, lo, hi in BUCKETS},
            "by_class": {c: stats(cats == c) for c in CLASSES if (cats == c).any()}}


def quality(train, val) -> tuple[list[dict], dict]:
    train_objs, val_objs = objects(train), objects(val)
    sizes = np.array([a.box.size for _, a in val_objs])
    cats = np.array([a.category for _, a in val_objs])
    methods = [("prior", "typical size, first 20 train boxes per class", None, 20),
               ("hand", "candidates + hand score, first 20 train boxes per class", None, 20),
               ("ranker", "candidates + ranker, first 100 train boxes", 100, None),
               ("ranker", "candidates + ranker, first 3000 train boxes", 3000, None)]
    rows, hist = [], {}
    for noise in (3.0, 0.0):
        clicks = centre_clicks(val_objs, noise)
        for method, name, n, first in methods:
            t = time.time()
            boxer = trained_boxer(train_objs[:n] if n else train_objs, n, first)
            t_click = time.time()
            ious = measure(boxer, val_objs, clicks, method)
            ms = 1000 * (time.time() - t_click) / len(val_objs)
            rows.append({"method": name, "click_sigma_px": noise,
                         "ms_per_click": round(ms, 2), "setup_s": round(t_click - t, 1),
                         **table(ious, sizes, cats)})
            print(f"{name:52s} sigma {noise}: {rows[-1]['all']}  {ms:.1f} ms", flush=True)
            if noise == 3.0:
                hist[name] = {b: ious[(sizes >= lo) & (sizes < hi)].tolist()
                              for b, lo, hi in BUCKETS}
    return rows, hist


def batch1(train, order: str, missing: str, accept_iou: float) -> dict:
    """Simulate batch 1 (BATCH1_IMAGES train images with objects) from nothing."""
    images = [im for im in train if im.annotations]
    if order == "random":
        pick = np.random.default_rng(0).permutation(len(images))
        images = [images[i] for i in pick]
    images = images[:BATCH1_IMAGES]
    truth = LabelSet(CLASSES, images)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        store = FileStore(Path(tmp))
        store.open_batch(1, LabelSet(CLASSES, [ImageLabels(im.image) for im in images]))
        paths = {im.id: DATA / im.image.path for im in images}
        clicker = CentreClicker(lambda i: gray_image(paths[i]), ImageClickBoxer())
        params = SimulatorParams(rounds=0, missing=missing, accept_iou=accept_iou)
        t = time.time()
        simulate_batch(store, 1, truth, lambda i, c: [], params, progress=False,
                       clicker=clicker)
        w = batch_workload(None, store.pull(1), WorkloadParams(), first_batch=True)
    return {"mode": missing, "order": order, "batch": 1, "accept_iou": accept_iou,
            "images": len(images), "objects": w["objects"],
            "seconds": round(w["seconds"], 1), "seconds_manual": w["manual_seconds"],
            "reduction_pct": w["reduction_seconds_pct"],
            **{k: w[k] for k in ("drawn", "click_accepted", "click_fixed")},
            **{f"{k}_seconds": round(w[f"{k}_seconds"], 1)
               for k in ("drawn", "click_accepted", "click_fixed")},
            "simulate_s": round(time.time() - t, 1)}


def plot(hist: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shown = [k for k in hist if "hand" in k or "3000" in k or "typical" in k]
    fig, axes = plt.subplots(1, len(BUCKETS), figsize=(13, 3.2), sharey=False)
    bins = np.linspace(0, 1, 21)
    for ax, (b, _, _) in zip(axes, BUCKETS):
        for name in shown:
            ax.hist(hist[name][b], bins=bins, histtype="step", lw=1.5,
                    label=name.split(",")[0] + ("" if "3000" not in name else " (3000)"))
        ax.axvline(0.5, color="grey", ls=":")
        ax.axvline(0.7, color="grey", ls=":")
        ax.set_title(f"objects {b} px (n={len(hist[shown[0]][b])})")
        ax.set_xlabel("IoU with the true box")
    axes[0].set_ylabel("objects")
    axes[0].legend(fontsize=7)
    fig.suptitle("HIT-UAV val: box from a centre click (3 px noise) and the image alone",
                 fontsize=10)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=110)


def model_quality(val, label: str, checkpoint: Path, boxer: ImageClickBoxer,
                  images: int = 100) -> tuple[dict, dict]:
    """Step 3: every object of the first `images` val images centre-clicked (3 px noise) and
    boxed by the App's path with the model `checkpoint`: all of an image's points at once,
    one predict per image, as an annotator runs "Boxes from clicks" once per image; `boxer`
    is the image path where the model explains nothing. An object's IoU is that of the best
    made box of its class (none: 0)."""
    from c3det import detectors
    from flows.annotate.click_boxes import boxes_from_clicks
    from tinyloop.annotations import Click
    val = val[:images]
    val_objs = objects(val)
    clicks = centre_clicks(val_objs, 3.0)
    predictor = None if str(checkpoint) == "none" else detectors.predictor(checkpoint, CLASSES)
    t, ious, start = time.time(), [], 0
    for im in val:
        n = len(outside_ignore(im.annotations, im.ignore))
        targets = [a for _, a in val_objs[start:start + n]]
        points = [Click(x, y, a.category) for a, (x, y) in zip(targets, clicks[start:start + n])]
        start += n
        made = boxes_from_clicks(DATA / im.image.path, points, [], predictor, lambda: boxer)
        for a in targets:   # the made box of its class nearest the object (none: IoU 0)
            mine = [m.box.iou(a.box) for m in made if m.category == a.category]
            ious.append(max(mine, default=0.0))
    ious = np.array(ious)
    sizes = np.array([a.box.size for _, a in val_objs])
    cats = np.array([a.category for _, a in val_objs])
    row = {"method": f"model {label} (App path: candidate, size prior, image)",
           "checkpoint": str(checkpoint), "click_sigma_px": 3.0, "images": len(val),
           "ms_per_click": round(1000 * (time.time() - t) / len(val_objs), 2),
           **table(ious, sizes, cats)}
    print(f"{row['method']}: {row['all']}", flush=True)
    return row, {b: ious[(sizes >= lo) & (sizes < hi)].tolist() for b, lo, hi in BUCKETS}


def loop_rows(results: str) -> list[dict]:
    """Step 4: click vs draw per batch of the loop runs in results/<results>.json."""
    doc = json.loads((REPO / f"benchmarks/results/{results}.json").read_text())
    rows = []
    for run in doc["runs"]:
        order = f"{run['strategy']} s{run['seed']}"
        root = Path(run["root"])
        for path in sorted(root.glob("data/batches/*/workload.json")):
            w = json.loads(path.read_text())
            batch = int(path.parent.name)   # data/batches/001
            common = {"order": order, "batch": batch, "images": w["images"],
                      "objects": w["objects"], "seconds_manual": w["manual_seconds"]}
            clicked = w["click_accepted"] + w["click_fixed"]
            rows.append({"mode": "draw", **common, "seconds": w["seconds_if_drawn"],
                         "drawn": w["drawn"] + clicked, "click_accepted": 0,
                         "click_fixed": 0})
            rows.append({"mode": "click", **common, "seconds": w["seconds"],
                         **{k: w[k] for k in ("drawn", "click_accepted", "click_fixed")}})
    return rows


def cumulative_rows(rows: list[dict]) -> list[dict]:
    """Per order and mode: seconds summed over the batches and the % saved vs by hand."""
    out: dict[tuple, dict] = {}
    for r in rows:
        key = (r["order"], r["mode"])
        c = out.setdefault(key, {"order": r["order"], "mode": r["mode"], "batches": 0,
                                 "seconds": 0.0, "seconds_manual": 0.0})
        c["batches"] += 1
        c["seconds"] += r["seconds"]
        c["seconds_manual"] += r["seconds_manual"]
    for c in out.values():
        c["reduction_pct"] = round(100 * (1 - c["seconds"] / c["seconds_manual"]), 1)
    return list(out.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=[], metavar="LABEL=CHECKPOINT",
                    help="step 3 only for these models, kept beside the recorded rows "
                         "(CHECKPOINT none: the image path alone on the same images)")
    ap.add_argument("--loops", nargs="+", default=[], metavar="RESULTS",
                    help="step 4 only: per-batch click vs draw rows of these loop results")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    labels = load_hituav(WORK)
    train, val = split_images(labels, "train"), split_images(labels, "val")
    if args.models or args.loops:
        doc = json.loads(RESULT.read_text())
        boxer = trained_boxer(objects(train)[:3000], 3000, None) if args.models else None
        for item in args.models:
            label, path = item.split("=", 1)
            row, hist = model_quality(val, label, Path(path), boxer)
            doc["quality"] = [q for q in doc["quality"] if q["method"] != row["method"]] + [row]
            doc.setdefault("model_hist", {})[label] = hist
        if args.loops:   # the issue's `rows`: batch 1 alone, then the loop's batches
            loop = [{**r, "setting": "cpu_loop"} for name in args.loops
                    for r in loop_rows(name)]
            doc.pop("loop_rows", None)
            doc["rows"] = [r for r in doc["rows"] if r.get("setting") != "cpu_loop"] + loop
            doc["loop_cumulative"] = cumulative_rows(loop)
            doc["loop_setting"] = json.loads((REPO / f"benchmarks/results/{args.loops[0]}"
                                              ".json").read_text())["setting"]
            for c in doc["loop_cumulative"]:
                print(c)
        RESULT.write_text(json.dumps(doc, indent=1) + "\n")
        return
    quality_rows, hist = quality(train, val)
    rows = []
    for order in ("id", "random"):
        rows.append(batch1(train, order, "draw", 0.5))
        for accept in (0.5, 0.7):
            rows.append(batch1(train, order, "click", accept))
            print(rows[-1], flush=True)
    doc = {"dataset": "HIT-UAV (shared/datasets/hit-uav, CC BY 4.0), val split for quality, "
                      f"first {BATCH1_IMAGES} train images for batch 1",
           "machine": os.environ.get("TINYLOOP_MACHINE", "2-core CPU dev box, 1 torch/BLAS "
                                     "thread"),
           "date": time.strftime("%Y-%m-%d"), "cost_model": vars(WorkloadParams()),
           "click_box": vars(ClickBoxParams()), "rows": rows, "quality": quality_rows}
    RESULT.write_text(json.dumps(doc, indent=1) + "\n")
    plot(hist)
    print(f"wrote {RESULT} and {PLOT}")


if __name__ == "__main__":
    main()
