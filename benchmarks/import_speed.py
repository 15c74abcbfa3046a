"""Foundation throughput: importing HIT-UAV end to end, generating synthetic data, tiling.

What `tinyloop ingest` costs on the two datasets people start from, measured end to end
(import_dataset with the default params, i.e. VOC + roLabelImg merge and every image fully
decoded, then write_pool writing manifest + ground truth atomically):
- the full HIT-UAV subset (1490 images) at ../shared/datasets/hit-uav (or $TINYLOOP_HITUAV)
- the bundled sample (60 images) at data/sample/hit-uav
plus the two other foundation pieces that sit on hot paths:
- synthetic data: make_synthetic, 256x256, in memory and written to PNG + labels.json
- tiling: tile_label_set over the full HIT-UAV labels (512 px tiles every 384 px) and
  merge_predictions on the resulting per-tile objects (every object seen by every tile that
  keeps it, as a detector would report it twice near tile borders), with and without the
  truncated-copy rule; `recovered_exactly` counts objects that come back with their exact
  original geometry, `extra_or_clipped` the merged boxes that are not an original object
  (a surviving clipped copy, or an object merged away shows as a missing one)

Each case runs --repeat times; the median is reported (warm page cache after the first run).
A per-stage breakdown of the import itself (threads, header-only checks, bare-decode
baseline) is benchmarks/ingest_speed.py.

    nice -n 10 .venv/bin/python benchmarks/import_speed.py [--repeat 3]
Writes benchmarks/results/import_speed.json and two pictures for the docs:
docs/img/synthetic_examples.png (synthetic images with their labels) and
docs/img/tiling_example.png (a bundled HIT-UAV image, its tile grid, the objects each tile
keeps and the cut ones it drops).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "import_speed.json"
IMG = ROOT / "docs" / "img"
MACHINE = os.environ.get("TINYLOOP_MACHINE", "2-core CPU, 24 GiB, no GPU (dev box)")


def hituav() -> Path:
    env = os.environ.get("TINYLOOP_HITUAV")
    return Path(env) if env else ROOT.parent / "shared" / "datasets" / "hit-uav"


def timed(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), result


def row(case: str, items: int, unit: str, median_s: float, best_s: float, **extra) -> dict:
    r = {"case": case, unit: items, "seconds_median": round(median_s, 3),
         "seconds_best": round(best_s, 3), f"{unit}_per_s": round(items / median_s, 1),
         f"{unit}_per_s_best": round(items / best_s, 1), **extra}
    print(r, flush=True)
    return r


def bench_import(root: Path, name: str, repeat: int, work: Path) -> dict:
    from tinyloop.config import DataParams
    from tinyloop.ingest import import_dataset, write_pool

    def run():
        labels, report = import_dataset(root, DataParams(), progress=False)
        write_pool(labels, report, work / "manifest.json", work / "ground_truth.json")
        return labels, report
    med, best, (labels, report) = timed(run, repeat)
    return row(f"import + write_pool: {name}", len(labels), "images", med, best,
               objects=sum(len(im.annotations) for im in labels),
               problems=len(report.problems))


def bench_synthetic(repeat: int, work: Path) -> list[dict]:
    from tinyloop.synthetic import make_synthetic
    n = 200
    med, best, _ = timed(lambda: make_synthetic(n, size=(256, 256), seed=0), repeat)
    rows = [row("make_synthetic 256x256, in memory", n, "images", med, best)]

    def written():
        shutil.rmtree(work / "syn", ignore_errors=True)
        return make_synthetic(n, size=(256, 256), seed=0, out_dir=work / "syn")
    med, best, _ = timed(written, repeat)
    rows.append(row("make_synthetic 256x256, PNG + labels.json", n, "images", med, best))
    return rows


def bench_tiling(root: Path, repeat: int) -> list[dict]:
    from dataclasses import replace

    from tinyloop.annotations import Box
    from tinyloop.config import DataParams
    from tinyloop.ingest import import_dataset
    from tinyloop.tiling import merge_predictions, tile_label_set
    labels, _ = import_dataset(root, DataParams(verify_images="header"), progress=False)
    med, best, tiles = timed(lambda: tile_label_set(labels, 512, 384, 0.5), repeat)
    rows = [row("tile_label_set 512/384 (oriented boxes, polygon shares)", len(labels),
                "images", med, best, tiles=len(tiles))]
    axis = replace(labels, images=[replace(im, annotations=[replace(a, obox=None)
                                                            for a in im.annotations])
                                   for im in labels.images])
    for name, source, cut_inside in (("axis-aligned NMS only", axis, None),
                                     ("axis-aligned NMS + truncated-copy rule", axis, 0.8),
                                     ("polygon NMS only", labels, None),
                                     ("polygon NMS + truncated-copy rule", labels, 0.8)):
        oriented = source is labels
        tiles = tile_label_set(source, 512, 384, 0.5)
        per_image: dict[str, list] = {}
        for t in tiles:
            per_image.setdefault(t.image.metadata["tile"]["image_id"], []).append(
                (Box(*t.image.metadata["tile"]["window"]), t.annotations))
        med, best, merged = timed(
            lambda: {k: merge_predictions(v, 0.5, cut_inside) for k, v in per_image.items()},
            repeat)
        exact = sum(len(_keys(merged.get(im.id, []), oriented) &
                        _keys(im.annotations, oriented)) for im in source)
        out = sum(len(m) for m in merged.values())
        rows.append(row(f"merge_predictions, {name}", len(per_image), "images", med, best,
                        predictions_in=sum(len(a) for v in per_image.values() for _, a in v),
                        predictions_out=out,
                        objects_in_labels=sum(len(im.annotations) for im in source),
                        recovered_exactly=exact, extra_or_clipped=out - exact))
    return rows


def bench_dense(repeat: int) -> list[dict]:
    """A DOTA-size scene: one 4000x4000 image, 3000 random 8-30 px objects (oriented),
    1024 px tiles every 512 px (49 windows); labels only, no pixels."""
    import math

    import numpy as np

    from tinyloop.annotations import (Annotation, Box, ImageLabels, ImageRecord, LabelSet,
                                      OrientedBox, Provenance)
    from tinyloop.tiling import merge_predictions, tile_label_set
    rng = np.random.default_rng(0)
    anns = []
    for _ in range(3000):
        cx, cy = rng.uniform(15, 3985, 2)
        w, h = rng.uniform(8, 30, 2)
        o = OrientedBox(float(cx), float(cy), float(w), float(h),
                        float(rng.uniform(0, math.pi)))
        anns.append(Annotation("car", o.bounding_box(), o,
                               Provenance("model", score=float(rng.uniform()))))
    rows = []
    for name, objects in (("axis-aligned", [Annotation(a.category, a.box, None, a.provenance)
                                            for a in anns]), ("oriented", anns)):
        labels = LabelSet(["car"], [ImageLabels(ImageRecord("big", "big.png", 4000, 4000),
                                                objects)])
        med, best, tiles = timed(lambda: tile_label_set(labels, 1024, 512, 0.5), repeat)
        rows.append(row(f"dense 4000x4000, 3000 objects: tile_label_set, {name}", 1, "images",
                        med, best, tiles=len(tiles)))
        per_tile = [(Box(*t.image.metadata["tile"]["window"]), t.annotations) for t in tiles]
        med, best, merged = timed(lambda: merge_predictions(per_tile, 0.5), repeat)
        rows.append(row(f"dense 4000x4000, 3000 objects: merge_predictions, {name}", 1,
                        "images", med, best,
                        predictions_in=sum(len(a) for _, a in per_tile),
                        predictions_out=len(merged)))
    return rows


def _keys(annotations, oriented: bool) -> set:
    """Comparable identity of each object (class + exact geometry) for recovery counts."""
    if oriented:
        return {(a.category, tuple(round(v, 4) for v in a.obox.as_list())) for a in annotations}
    return {(a.category, tuple(a.box.xyxy())) for a in annotations}


def figure_synthetic() -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from tinyloop.synthetic import make_synthetic
    classes = ["disc", "square", "cross", "ring", "triangle", "diamond", "dark disc"]
    labels, pixels = make_synthetic(4, size=(256, 256), classes=classes, seed=0,
                                    ignore_per_image=1)
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    for ax, item, px in zip(axes, labels, pixels):
        ax.imshow(px[0], cmap="gray", vmin=0, vmax=1)
        for a in item.annotations:
            k = classes.index(a.category)
            ax.add_patch(Rectangle((a.box.x1, a.box.y1), a.box.width, a.box.height,
                                   fill=False, lw=1, color=colours(k)))
        for r in item.ignore:
            ax.add_patch(Rectangle((r.box.x1, r.box.y1), r.box.width, r.box.height,
                                   fill=False, lw=1, ls="--", color="white"))
        ax.set_axis_off()
    handles = [Rectangle((0, 0), 1, 1, fill=False, color=colours(k)) for k in range(len(classes))]
    fig.legend(handles + [Rectangle((0, 0), 1, 1, fill=False, ls="--", color="gray")],
               classes + ["ignore region"], loc="lower center", ncol=8, fontsize=8)
    fig.suptitle("make_synthetic(seed=0): one shape per class, 10-30 px, textured background")
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    out = IMG / "synthetic_examples.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def figure_tiling() -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from tinyloop.config import DataParams
    from tinyloop.images import load_image
    from tinyloop.ingest import import_dataset
    from tinyloop.tiling import tile_labels, tile_windows
    root = ROOT / "data" / "sample" / "hit-uav"
    labels, _ = import_dataset(root, DataParams(verify_images="header"), progress=False)
    item = max(labels, key=lambda im: len(im.annotations))
    windows = tile_windows(item.image.width, item.image.height, 256, 192)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    image = load_image(root / item.image.path)[0]
    axes[0].imshow(image, cmap="gray")
    for k, w in enumerate(windows):
        axes[0].add_patch(Rectangle((w.x1 + k % 3, w.y1 + k % 3), w.width - 2 * (k % 3),
                                    w.height - 2 * (k % 3), fill=False, lw=1,
                                    color=plt.get_cmap("tab10")(k % 10)))
    axes[0].set_title(f"{item.id}: 256 px tiles every 192 px ({len(windows)} windows)",
                      fontsize=9)
    w = windows[4]
    tile = tile_labels(item, w, 0.5)
    x1, y1, x2, y2 = (int(v) for v in w.xyxy())
    axes[1].imshow(image[y1:y2, x1:x2], cmap="gray", extent=(x1, x2, y2, y1))
    for a in item.annotations:          # every source object reaching into the window
        b = a.box
        if b.x1 < w.x2 and b.x2 > w.x1 and b.y1 < w.y2 and b.y2 > w.y1:
            axes[1].add_patch(plt.Polygon(a.obox.corners(), fill=False, lw=1, ls="--",
                                          color="red"))
    for a in tile.annotations:          # what the tile keeps, back in image coordinates
        c = [(x + x1, y + y1) for x, y in a.obox.corners()]
        axes[1].add_patch(plt.Polygon(c, fill=False, lw=1.5, color="yellow"))
    axes[1].set_xlim(x1 - 20, x2 + 20)
    axes[1].set_ylim(y2 + 20, y1 - 20)
    axes[1].add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1, color="cyan"))
    axes[1].set_title("window 5 (cyan): source objects reaching into it (red dashed) and what "
                      "tile_labels keeps\n(yellow; min_visible 0.5, cut boxes clipped at the "
                      "border with their angle)", fontsize=9)
    fig.tight_layout()
    out = IMG / "tiling_example.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    print(f"load average before: {load_before:.1f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        full = hituav()
        if (full / "images").is_dir():
            rows.append(bench_import(full, "HIT-UAV subset (1490)", args.repeat, work))
        else:
            print(f"full HIT-UAV not found at {full}; skipped", flush=True)
        rows.append(bench_import(ROOT / "data" / "sample" / "hit-uav", "bundled sample (60)",
                                 args.repeat, work))
        rows += bench_synthetic(args.repeat, work)
        if (full / "images").is_dir():
            rows += bench_tiling(full, args.repeat)
        rows += bench_dense(args.repeat)
    print(f"wrote {figure_synthetic()} and {figure_tiling()}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "benchmark": "import_speed", "machine": MACHINE,
        "python": platform.python_version(), "repeat": args.repeat,
        "load_average_1min_before": round(load_before, 2),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
        "note": "medians of warm-cache runs (the load averages say how busy the box was); "
                "best-of-repeat shows the less-disturbed speed",
        "cases": rows}, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
