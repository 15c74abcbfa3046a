"""What the benchmark scripts share: the HIT-UAV dataset, its seeded splits, and the reduced
detector training schedule's flags (so that a flag means the same in every script).

Scripts import it as `common`: run as `.venv/bin/python benchmarks/X.py`, Python puts
benchmarks/ first on sys.path. The repo's packages come from the editable install (on a GPU
box without it, the command puts the repo root on PYTHONPATH). No script imports another.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from c3det.config import TrainParams
from tinyloop.annotations import ImageLabels, LabelSet

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TINYLOOP_HITUAV", REPO.parent / "shared/datasets/hit-uav"))
# the simulated annotator's stand-in detector in the workload and ranker benchmarks
BASE_RATES = dict(miss=0.25, relabel=0.1, jitter=0.1, false_positives=0.5, fix=0.9,
                  spread=0.2, vary=0.8)


def load_hituav(work: Path) -> LabelSet:
    """HIT-UAV through tinyloop.ingest, cached as a labels file in the work dir."""
    from tinyloop.cocofile import read_labels, write_labels
    cache = work / "hituav_labels.json"
    if cache.exists():
        return read_labels(cache)
    from tinyloop.config import DataParams
    from tinyloop.ingest import import_dataset
    labels, report = import_dataset(DATA, DataParams(source=str(DATA)), progress=False)
    if report.problems:
        print(report.summary(), file=sys.stderr)
    write_labels(labels, cache)
    return labels


def split(labels: LabelSet, name: str, n: int | None, seed: int) -> LabelSet:
    """n images of a split with at least one object, drawn at random (fixed seed)."""
    ims = [im for im in labels.images
           if im.image.metadata.get("split") == name and im.annotations]
    ims.sort(key=lambda im: im.id)
    if n is not None and n < len(ims):
        pick = np.random.default_rng(seed).choice(len(ims), n, replace=False)
        ims = [ims[i] for i in sorted(pick)]
    return LabelSet(labels.categories, ims, labels.info)


def schedule_args(t: argparse.ArgumentParser, epochs: int, lr_steps: list[int],
                  test_images: int = 48, threads: int = 1) -> None:
    """The reduced training schedule of one detector run, shared by the c3det benchmarks so
    that a flag means the same in each (only the defaults given here differ)."""
    t.add_argument("--seed", type=int, default=0, help="training seed (crops, init of new layers)")
    t.add_argument("--test-images", type=int, default=test_images, help="HIT-UAV val images scored")
    t.add_argument("--crop", type=int, default=192, help="training crop side, px")
    t.add_argument("--batch", type=int, default=4, help="crops per step")
    t.add_argument("--epochs", type=int, default=epochs)
    t.add_argument("--lr", type=float, default=0.01, help="SGD learning rate")
    t.add_argument("--warmup", type=int, default=50, help="linear warm-up steps")
    t.add_argument("--lr-steps", type=int, nargs="*", default=lr_steps,
                   help="epochs after which the lr drops x0.1")
    t.add_argument("--roi-batch", type=int, default=128, help="RoIs sampled per image")
    t.add_argument("--threads", type=int, default=threads, help="torch CPU threads")
    t.add_argument("--amp-dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="training's autocast dtype (c3det.train.amp_dtype; auto: float16 on "
                        "CUDA, bfloat16 on a CPU with native bf16, else float32)")


def precision_fields(amp_dtype: str) -> dict:
    """TrainParams fields of an --amp-dtype flag value (float32: no autocast)."""
    return {"amp": False} if amp_dtype == "float32" else {"amp_dtype": amp_dtype}


def schedule_train(a: argparse.Namespace, **more) -> TrainParams:
    """The TrainParams of `schedule_args`' flags (plus `more` fields)."""
    return TrainParams(epochs=a.epochs, batch_size=a.batch, lr=a.lr, crop_size=a.crop,
                       warmup_iters=a.warmup, lr_steps=a.lr_steps, seed=a.seed,
                       **precision_fields(a.amp_dtype), **more)


def resolved_dtype(tp: TrainParams) -> str:
    """The dtype training runs in on this machine (recorded with each result)."""
    from c3det.train import autocast_dtype, dtype_name
    from tinyloop.device import resolve_device
    return dtype_name(autocast_dtype(tp, resolve_device()))


def fmt(x, nd=1) -> str:
    """x with nd decimals, a dash for a value not measured."""
    return "–" if x is None else f"{x:.{nd}f}"


def import_headers_only(root: Path) -> LabelSet:
    """The dataset at `root` (--data, any copy of HIT-UAV) imported afresh, checking image
    headers only (not common.load_hituav: no cache in a work dir, no full decode)."""
    from tinyloop.config import DataParams
    from tinyloop.ingest import import_dataset
    labels, report = import_dataset(root, replace(DataParams(), verify_images="header"),
                                    progress=False)
    if report.problems:
        print(report.summary(), file=sys.stderr)
    return labels


def whole_split(labels: LabelSet, name: str) -> LabelSet:
    """Every image of the split, those without objects too (not common.split: the ranker
    learns from empty images as well, and no subset is drawn)."""
    return LabelSet(labels.categories,
                    [im for im in labels if im.image.metadata.get("split") == name])


def run_train_or_report(a: argparse.Namespace, train_cmd, report_cmd) -> None:
    """A `train` / `report` script's dispatch (c3det_pretrained.py, c3det_norm.py): training
    runs on --threads torch CPU threads."""
    if a.cmd == "train":
        import torch
        torch.set_num_threads(a.threads)
        train_cmd(a)
    else:
        report_cmd(a)


# --- the plain detector's training runs (c3det_pretrained.py and the scripts built on it) ---

# The HIT-UAV CPU loop of the right-sized detector (#29), run by active_selection.py (its
# fixed orders are the loop's baselines; click_mode.py --loops reads them): 4 batches of 50, each
# model warm-started from the last, the CPU schedule of params.yaml's c3det.cpu (192 px crops,
# 128 RoIs) with 60 epochs on batch 1 (50 images x 24 epochs gave mAP@0.5 7, every box
# hidden: the first model needs crops, not images) and 6 on each later model (the click
# branch a quarter of those), the demo's rules (score cut chosen per model, clicks only while
# they pay), missing objects centre-clicked (every batch also states what drawing them would
# have cost, so one run prices both modes).
CPU_LOOP = {
    "features.image_size": 112, "features.num_workers": 0, "features.batch_size": 32,
    "order.first_batch_size": 50, "order.batch_size": 50, "flows.iterations": 4,
    "flows.warm_start": True, "flows.warm_start_epochs": 6,
    "c3det.train.epochs": 60, "c3det.train.lr_steps": [50], "c3det.train.warmup_iters": 20,
    "c3det.eval.click_steps": [0], "c3det.eval.sessions": 1, "flows.eval_max_images": 100,
    "flows.min_score": "auto", "flows.train_recipe": "detector_first",
    "flows.click_branch_share": 0.25, "c3det.lf_backbone": "light",
    "simulator.stop_unpaid_clicks": True, "simulator.give_up_after_unpaid": 2,
    "simulator.give_up_when_behind": True, "simulator.missing": "click",
    "order.select.candidate_factor": 4, "order.select.score_all_below": 0,
}

def copy_finished_model(model_dir: Path, dest: Path, poll_s: float = 20.0) -> None:
    """Copy a loop's finished model (its train.json marks it so) into `dest`, waiting for
    another process to finish it; train.json records where it came from."""
    import json
    import shutil
    import time
    while not (model_dir / "train.json").exists():
        time.sleep(poll_s)
    keep = ("model.pt", "train.json", "metrics.jsonl", "detector")
    shutil.copytree(model_dir, dest, ignore=lambda d, names: [
        n for n in names if Path(d) == model_dir and n not in keep])
    done = json.loads((dest / "train.json").read_text())
    (dest / "train.json").write_text(json.dumps({**done, "reused_from": str(model_dir)}))


def same_first_batch(run: Path, donor: Path) -> bool:
    """Did `run` label the same batch 1 (the same images) as `donor`?"""
    import json

    def ids(root: Path) -> list[str]:
        data = json.loads((root / "data/batches/001/labels.json").read_text())
        return sorted(im["file_name"] for im in data["images"])
    return ids(run) == ids(donor)


PRETRAINED_WORK = REPO / "data/benchmarks/c3det_pretrained"   # its runs and HIT-UAV cache


def train_and_score(train_set, test_set, p, out: Path, name: str) -> dict:
    """Train the plain detector on `train_set` (c3det.config.C3DetParams `p`), score mAP@0.5
    at 0 clicks on `test_set`."""
    import time
    import torch
    from c3det import checkpoint
    from c3det.evaluate import map_vs_clicks
    from c3det.train import train
    t0, c0 = time.time(), time.process_time()
    r = train(train_set, DATA, p, out, kind="plain")
    train_s, train_cpu_s = time.time() - t0, time.process_time() - c0
    model, _ = checkpoint.load(out / "model.pt")
    ev = map_vs_clicks(model, test_set, DATA, p.eval, name=name)
    return {"map50": ev["map_mean"][0],
            "per_class": {c: v[0] for c, v in ev["per_class"].items()},
            "by_size": {b: v[0] for b, v in ev["by_size"].items()},
            "final_loss": r["epochs"][-1]["loss"], "train_s": train_s,
            "train_cpu_s": train_cpu_s, "test_objects": ev["objects"],
            "device": "cuda" if torch.cuda.is_available() else "cpu"}


# --- a trained run's workload (wt_by_train_images.py, detector_frontier.py) -------------------

def val_sets(labels: LabelSet, measure_n: int) -> tuple[LabelSet, LabelSet]:
    """(choose, measure): the 48 mAP images of c3det_pretrained.py, and `measure_n` other val
    images with objects (fixed random draw)."""
    choose = split(labels, "val", 48, 1)
    taken = {i.id for i in choose.images}
    rest = [i for i in split(labels, "val", None, 0).images if i.id not in taken]
    pick = sorted(np.random.default_rng(2).choice(len(rest), min(measure_n, len(rest)),
                                                  replace=False))
    return choose, LabelSet(labels.categories, [rest[k] for k in pick], labels.info)


def scored_boxes(pred, images: LabelSet) -> LabelSet:
    """Every box `pred` (a Predictor showing every score) finds on `images`."""
    return LabelSet(images.categories,
                    [ImageLabels(i.image, pred.predict(str(DATA / i.image.path), []))
                     for i in images.images], images.info)


def measure_model(run: Path, choose: LabelSet, measure: LabelSet, cost) -> dict:
    """The workload saving of the run's model (flows.project.config.WorkloadParams `cost`):
    its min_score chosen on `choose`, measured on `measure`; reads the run's result.json."""
    import json
    from c3det.predict import Predictor
    from flows.accounting.workload import best_threshold, saving, wt_by_threshold
    from flows.model_policy import THRESHOLDS
    pred = Predictor(run / "model.pt", device="cpu", min_score=0.0)   # auto cuts the scores
    chosen_curve = wt_by_threshold(scored_boxes(pred, choose), choose, cost, THRESHOLDS)
    cut = best_threshold(chosen_curve, 0.0)
    curve = wt_by_threshold(scored_boxes(pred, measure), measure, cost, THRESHOLDS)
    at_cut = next((r for r in curve if r["min_score"] == cut), None)
    hindsight = max(curve, key=saving)
    trained = json.loads((run / "result.json").read_text())
    return {"run": run.name, "weights": trained["weights"], "dtype": trained.get("dtype"),
            "train_images": trained["train_images"], "seed": trained["seed"],
            "epochs": trained["schedule"]["epochs"], "map50": trained["map50"],
            "min_score": cut, "wt_reduction_pct": at_cut["wt_reduction_pct"] if at_cut else 0.0,
            "seconds_reduction_pct": at_cut["seconds_reduction_pct"] if at_cut else 0.0,
            "hindsight": hindsight, "choose_curve": chosen_curve, "measure_curve": curve}


# --- yolo_vs_frcnn.py's runs (gpu_window.py prepares and collects them) ----------------------

YOLO_WORK = REPO / "data/benchmarks/yolo_vs_frcnn"
YOLO_SMOKE = {"train_images": 4, "test_images": 2, "epochs": 1, "yolo_epochs": 1, "crop": 128,
              "speed_images": 2, "batch": 2, "yolo_batch": 2}


def yolo_work_dir(a) -> Path:
    return YOLO_WORK / "smoke" if a.smoke else YOLO_WORK


def yolo_run_dir(a, cell: str) -> Path:
    """Where yolo_vs_frcnn.py's run of `cell` under flags `a` keeps its files."""
    epochs = a.epochs if cell == "frcnn" else a.yolo_epochs
    budget = f"_t{round(a.yolo_time_h * 3600)}s" if cell != "frcnn" and a.yolo_time_h else ""
    return yolo_work_dir(a) / f"{cell}_n{a.train_images}_e{epochs}{budget}_seed{a.seed}"


def simulate_in_new_project(root: Path, source: Path, overrides: dict,
                            shared: Path | None = None, first_model: Path | None = None):
    """The `simulate` flow (the whole loop, simulated annotator) in a fresh project at `root`
    on `source` with params `overrides`; the ingested pool and embeddings of the project
    `shared` are copied in (the same input for every run). `first_model`: another run's
    finished model 1 (its models/iter-001), copied in so that training it is skipped: only
    for runs whose batch 1 and training are that run's (check with `same_first_batch`).
    Returns (layout, wall seconds)."""
    import shutil
    import time
    from flows.loop import simulate
    from flows.project.init import init_project
    from flows.runtime import prefect_env
    if root.exists():
        shutil.rmtree(root)
    layout = init_project(root, source=str(source), params_overrides=overrides)
    if shared is not None:
        for sub in ("pool", "features"):
            shutil.copytree(shared / "data" / sub, layout.data / sub)
    if first_model is not None:
        copy_finished_model(first_model, layout.model_dir(1))
    prefect_env(str(root))
    t0 = time.perf_counter()
    simulate(str(root))
    return layout, time.perf_counter() - t0
