"""Latency of the interactive detector: a full forward vs one more click with cached features.

    .venv/bin/python benchmarks/c3det_latency.py [--runs 5] [--threads 2] [--device cpu]

For each image size (640x512 = a HIT-UAV frame, 1024x1024 = a Tiny-DOTA patch) and model
variant, times (median of --runs, after one warm-up):
- full:   Predictor.predict(image, clicks): backbone + FPN + click branch + heads + click-to-box
- click:  InteractiveSession.add_click on a session that already has the image's features:
          heatmaps + Late Fusion + C3 + (c3det.click_heads: cached image terms + click channels
          through the RPN conv and RoI pooling) + RPN/RoI heads + click-to-box
and, for reference, the stages of the plain re-run (fuse then heads) separately. Untrained weights: the cost does not depend on them (the RPN
always hands the RoI head `rpn_proposals_test` boxes). Targets (issue 3): click <= 0.3 x full;
<= 300 ms per click at 640x512 with ResNet-18 on the 2-core CPU; <= 30 ms at 1024x1024 on an
H100/H200. Writes benchmarks/results/c3det_latency.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from c3det.config import C3DetParams  # noqa: E402
from c3det.model import build_model  # noqa: E402
from c3det.predict import Predictor  # noqa: E402
from tinyloop.annotations import Click  # noqa: E402

CLASSES = ["Person", "Car", "Bicycle", "OtherVehicle"]
VARIANTS = {  # all: C3Det, ResNet-18 image backbone, Faster R-CNN
    "default": {},                                    # reference LF: ResNet-18 + FPN 256
    "light-lf64": {"lf_backbone": "light", "lf_channels": 64},
    "light-lf64-100p": {"lf_backbone": "light", "lf_channels": 64, "rpn_proposals_test": 100},
}


NOTES = {
    "cpu": "median wall time (and median process CPU seconds, all threads); other agents may "
           "share the cores, so wall times can be pessimistic (compare the load averages); CPU "
           "seconds / threads estimates an idle box",
    "cuda": "median wall time with torch.cuda.synchronize() around each call (the CPU seconds "
            "are the host process's: kernel launches and Python)",
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_time(fn, runs, device) -> tuple[float, float]:
    """(median wall seconds, median process CPU seconds) of fn(), after one warm-up."""
    fn()
    walls, cpus = [], []
    for _ in range(runs):
        _sync(device)
        t, c = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def clicks_for(width, height, n, seed=0):
    rng = np.random.default_rng(seed)
    return [Click(float(rng.uniform(0, width)), float(rng.uniform(0, height)),
                  CLASSES[int(rng.integers(len(CLASSES)))]) for _ in range(n)]


@torch.no_grad()
def stage_times(pred: Predictor, session, clicks, runs, device) -> dict[str, tuple]:
    """(wall, CPU) median seconds of each stage of one more click (cached features)."""
    core = pred.model
    tile = session.tiles[0]
    batch = core.with_clicks(tile.batch, [pred.click_tensor(clicks)])
    feats = tile.features
    fusion = core.fusion
    out = {}
    from c3det.c3 import c3_maps
    from c3det.heatmaps import class_heatmaps
    heat = class_heatmaps(batch.clicks[0], core.num_classes, *batch.padded_size,
                          fusion.heatmap_sigma)[None]
    out["heatmaps"] = _median_time(lambda: class_heatmaps(
        batch.clicks[0], core.num_classes, *batch.padded_size, fusion.heatmap_sigma), runs, device)
    out["late_fusion"] = _median_time(lambda: fusion.lf(heat), runs, device)
    out["c3"] = _median_time(lambda: [c3_maps(f, batch.clicks, core.num_classes,
                                              batch.padded_size[0] / f.shape[-2],
                                              fusion.c3_sigma) for f in feats.values()],
                             runs, device)
    fused = core.fuse(feats, batch)
    out["fusion (LF+C3+1x1)"] = _median_time(lambda: core.fuse(feats, batch), runs, device)
    out["rpn"] = _median_time(lambda: core.detector.rpn(batch.images, fused), runs, device)
    props, _ = core.detector.rpn(batch.images, fused)
    out["roi_head"] = _median_time(lambda: core.detector.roi_heads(
        fused, props, batch.images.image_sizes, candidates=True), runs, device)
    return out


def bench(size, variant, overrides, runs, device, n_clicks=5) -> dict:
    width, height = size
    torch.manual_seed(0)
    params = dataclasses.replace(C3DetParams(), **overrides)
    model = build_model("c3det", len(CLASSES), params).to(device).eval()
    pred = Predictor(model, CLASSES, device=device)
    image = np.random.default_rng(0).random((3, height, width), dtype=np.float32)
    clicks = clicks_for(width, height, n_clicks + 1)
    full, full_cpu = _median_time(lambda: pred.predict(image, clicks), runs, device)
    session = pred.session(image)
    session.set_clicks(clicks[:n_clicks])

    def one_more():  # the (n+1)-th click on top of n, features cached
        session.clicks = list(clicks[:n_clicks])   # back to n clicks without a re-run
        for tile in session.tiles:
            tile.clicks_key = None
        session.add_click(clicks[n_clicks])

    click, click_cpu = _median_time(one_more, runs, device)
    stages = stage_times(pred, session, clicks, runs, device) if \
        len(session.tiles) == 1 else {}
    return {"image": f"{width}x{height}", "variant": variant, "params": overrides,
            "clicks_before": n_clicks, "full_forward_s": round(full, 4),
            "one_more_click_s": round(click, 4), "ratio": round(click / full, 3),
            "full_forward_cpu_s": round(full_cpu, 4), "one_more_click_cpu_s": round(click_cpu, 4),
            "ratio_cpu": round(click_cpu / full_cpu, 3),
            "click_stages_s": {k: round(v[0], 4) for k, v in stages.items()},
            "click_stages_cpu_s": {k: round(v[1], 4) for k, v in stages.items()}}


def plot(rows: list[dict], path: Path) -> None:
    """Bars (CPU seconds: stable on a shared box): full forward vs one more click per image
    size and variant, the click's stages stacked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 0.9 * len(rows) + 1.5))
    labels = [f"{r['image']}  {r['variant']}" for r in rows]
    y = np.arange(len(rows))
    ax.barh(y + 0.2, [r["full_forward_cpu_s"] for r in rows], 0.38, color="#999999",
            label="full forward")
    left = np.zeros(len(rows))
    for r in rows:  # the 1x1 mixing conv = the fusion stage less its LF and C3 parts
        st = r["click_stages_cpu_s"]
        if st:
            st["1x1 mix"] = max(0.0, st["fusion (LF+C3+1x1)"] - st["late_fusion"] - st["c3"])
    stages = ["late_fusion", "c3", "1x1 mix", "rpn", "roi_head"]
    for stage, colour in zip(stages, ["#1f77b4", "#ff7f0e", "#9467bd", "#2ca02c", "#d62728"]):
        vals = np.array([r["click_stages_cpu_s"].get(stage, 0.0) for r in rows])
        ax.barh(y - 0.2, vals, 0.38, left=left, color=colour, label=f"click: {stage}")
        left += vals
    ax.scatter([r["one_more_click_cpu_s"] for r in rows], y - 0.2, marker="|", s=300, c="k",
               label="one more click (total)")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("CPU seconds, all threads (median; wall time on an idle box ~ this / threads)")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("c3det: full forward vs one more click with cached image features")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="640x512,1024x1024")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/c3det_latency.json"))
    ap.add_argument("--plot", default=str(ROOT / "docs/img/c3det_latency.png"),
                    help="PNG of the timings ('' = none)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_before = os.getloadavg()
    rows = []
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        for name in args.variants.split(","):
            row = bench((w, h), name, VARIANTS[name], args.runs, device)
            print(json.dumps(row), flush=True)
            rows.append(row)
    cpu = platform.processor() or platform.machine()
    machine = (f"{torch.cuda.get_device_name(0)}" if device.type == "cuda" else
               f"{os.cpu_count()}-core CPU ({cpu}), {args.threads} torch threads, no GPU "
               f"({os.environ.get('TINYLOOP_MACHINE_NOTE', 'dev box')})")
    targets = []
    for r in rows:
        ok_ratio = r["ratio"] <= 0.3 and (device.type == "cuda" or r["ratio_cpu"] <= 0.3)
        entry = {"image": r["image"], "variant": r["variant"],
                 "click_le_0.3x_full": ok_ratio}
        if device.type == "cpu" and r["image"] == "640x512":
            entry["click_le_300ms_cpu"] = r["one_more_click_s"] <= 0.3
        if device.type == "cuda" and r["image"] == "1024x1024":
            entry["click_le_30ms_gpu"] = r["one_more_click_s"] <= 0.03
        targets.append(entry)
    result = {"benchmark": "c3det_latency", "machine": machine, "device": str(device),
              "torch": torch.__version__, "runs": args.runs,
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "note": NOTES[device.type],
              "results": rows, "targets": targets}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    if args.plot:
        plot(rows, Path(args.plot))
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
