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
from tinyloop.annotations import LabelSet

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
