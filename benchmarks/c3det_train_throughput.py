"""Training throughput (images/s) of each detector kind on HIT-UAV crops.

Runs a few SGD steps (after one warm-up step) on random crops of HIT-UAV train images with
simulated clicks, exactly as c3det.train does, and records per kind:
- images_per_s:          wall clock (what a user sees; on a shared machine it depends on load)
- images_per_cpu_s:      images per CPU-second of this process (all its threads): nearly
                         independent of other jobs on the machine, so comparable across runs.
Writes benchmarks/results/c3det_train_throughput.json (`_gpu.json` on a GPU). Mixed
precision as c3det.train resolves `--amp-dtype` (auto: float16 on CUDA, bfloat16 on a CPU
with native bf16). `--profile` adds each kind's top operators (torch.profiler, by self
time on the device when there is one) and, on a GPU, the share of the step wall time the GPU
was busy: a low share means the step is bound by Python / kernel launches, not by the GPU.

    python benchmarks/c3det_train_throughput.py --crop 128 --batch 4 --steps 3
    python benchmarks/c3det_train_throughput.py --crop 512 --batch 8 --kinds c3det --profile
    python benchmarks/c3det_train_throughput.py --backbone resnet18 --weights none --out x.json
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

from c3det.config import C3DetParams, TrainParams  # noqa: E402
from c3det.data import DetectionDataset, collate  # noqa: E402
from c3det.model import build_model  # noqa: E402
from c3det.train import autocast_dtype, dtype_name  # noqa: E402
from common import DATA, fmt, load_hituav, precision_fields, split  # noqa: E402

RESULT = REPO / "benchmarks/results/c3det_train_throughput{}.json"
TOP_OPS = 15


def measure(kind: str, data: DetectionDataset, a, device: torch.device) -> dict:
    p = C3DetParams(roi_batch_size=a.roi_batch, backbone=a.backbone, weights=a.weights)
    torch.manual_seed(0)
    model = build_model(kind, 4, p).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    dtype = amp_dtype(a, device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    idx = np.random.default_rng(0).permutation(len(data))
    wall = cpu = 0.0
    n = 0
    prof = None
    for s in range(a.steps + 1):
        if s == 1 and a.profile:  # step 0 is warm-up
            prof = _profiler(device)
            prof.__enter__()
        images, targets = collate([data[int(i)] for i in idx[s * a.batch:(s + 1) * a.batch]])
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
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
    row = {"kind": kind, "images": n, "wall_s": wall, "cpu_s": cpu,
           "images_per_s": n / wall, "images_per_cpu_s": n / cpu if cpu else None}
    if prof is not None:
        prof.__exit__(None, None, None)
        row.update(_top_ops(prof, device, wall))
    return row


def amp_dtype(a, device: torch.device) -> torch.dtype | None:
    """--amp-dtype as c3det.train resolves it (float32: no autocast)."""
    return autocast_dtype(TrainParams(**precision_fields(a.amp_dtype)), device)


def _profiler(device: torch.device):
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    return profile(activities=acts)


def _top_ops(prof, device: torch.device, wall: float) -> dict:
    """The operators with the most self time (device time on a GPU), in ms over all steps."""
    def dev(e) -> float:  # renamed across torch versions
        return getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0))
    events = list(prof.key_averages())
    on_gpu = device.type == "cuda"
    events.sort(key=(dev if on_gpu else (lambda e: e.self_cpu_time_total)), reverse=True)
    out = {"top_ops": [{"name": e.key, "calls": e.count,
                        "self_cpu_ms": e.self_cpu_time_total / 1e3,
                        **({"self_gpu_ms": dev(e) / 1e3} if on_gpu else {})}
                       for e in events[:TOP_OPS]]}
    if on_gpu:  # kernels' self time summed: the GPU's busy time (streams may overlap a little)
        out["gpu_busy_share"] = sum(dev(e) for e in events) / 1e6 / max(wall, 1e-9)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--roi-batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backbone", default=C3DetParams.backbone,
                    help="c3det.backbone (default: the project's, %(default)s)")
    ap.add_argument("--weights", default=C3DetParams.weights,
                    help="c3det.weights: imagenet | none (default %(default)s)")
    ap.add_argument("--kinds", nargs="+", default=["plain", "early_fusion", "late_fusion",
                                                     "c3det"])
    ap.add_argument("--work", default=str(REPO / "data/benchmarks/c3det"))
    ap.add_argument("--amp-dtype", choices=["auto", "float32", "float16", "bfloat16"],
                    default="auto", help="autocast dtype of the step, as c3det.train.amp_dtype "
                    "(auto: float16 on CUDA, bfloat16 on a CPU with native bf16, else float32)")
    ap.add_argument("--profile", action="store_true",
                    help="record each kind's top operators (torch.profiler)")
    ap.add_argument("--out", default=None,
                    help="result file name under benchmarks/results (default: "
                         "c3det_train_throughput.json, _gpu.json on a GPU)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    labels = split(load_hituav(Path(a.work)), "train", 64, 0)
    data = DetectionDataset(labels, DATA, TrainParams(crop_size=a.crop, seed=0))
    rows = []
    for kind in a.kinds:
        rows.append(measure(kind, data, a, device))
        r = rows[-1]
        print(f"{kind}: {r['images_per_s']:.2f} images/s, {fmt(r['images_per_cpu_s'], 3)} per "
              f"CPU-second" + (f", GPU busy {r['gpu_busy_share']:.0%}"
                                if "gpu_busy_share" in r else ""), flush=True)
        for op in r.get("top_ops", []):
            print(f"  {op['name'][:60]:60s} {op['calls']:6d} calls "
                  f"{op.get('self_gpu_ms', op['self_cpu_ms']):9.1f} ms", flush=True)
    load = os.getloadavg()[0]
    machine = (torch.cuda.get_device_name() if device.type == "cuda" else
               f"{os.cpu_count()}-core CPU, no GPU (dev box; {a.threads} torch threads; "
               f"load average {load:.1f} when measured)")
    doc = {"benchmark": "c3det_train_throughput", "machine": machine,
           "setup": {"crop": a.crop, "batch": a.batch, "measured_steps": a.steps,
                     "roi_batch_size": a.roi_batch, "backbone": a.backbone,
                     "weights": a.weights,
                     "detector": "faster_rcnn",
                     "amp_dtype": dtype_name(amp_dtype(a, device))},
           "date": time.strftime("%Y-%m-%d"), "results": rows}
    out = (RESULT.parent / a.out if a.out else
           Path(str(RESULT).format("_gpu" if device.type == "cuda" else "")))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
