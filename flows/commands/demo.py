"""`tinyloop demo`: the README's main command: the whole loop on the bundled HIT-UAV sample.

Makes a project (default `runs/demo`), imports the bundled real sample (data/sample/hit-uav:
HIT-UAV infrared drone images, CC BY 4.0, Suo et al. 2023) and runs the `simulate` flow:
batches ordered by dissimilarity, each pre-annotated by the model of the previous batches,
corrected by the simulated annotator (clicks, then exact correction) through the annotation
store, retrained, evaluated on the sample's val split and versioned (git tag iter-NNN, DVC
remote .dvc-remote). Prints the per-batch workload table and writes reports/index.html.

Everything is embedded: an ephemeral Prefect server, a plain-file annotation store (no
MongoDB needed), a local DVC remote. The schedule is cut down for 2 CPU cores: 3 batches of
16 images; the detector starts from ImageNet EfficientNet-Lite0 and trains 160 steps of
128 px crops on batch 1, then 6 epochs per batch warm-started from the last model; boxes
are shown from each model's best score threshold on the held-out images (min_score auto).
See docs/benchmarks/flows.md for numbers at larger scale.

The import summary comes first (problems stop the demo unless --keep-going; all are listed
in data/pool/import_report.json), then the dataset's statistics. While the loop runs, every
step of every iteration prints a start line and a line with its elapsed time, training,
embedding, pre-annotation and the simulated annotator draw bars with rate and ETA on a
terminal (elsewhere a plain line after 15 s without one), and each batch's workload row is
printed as soon as the batch is done; --quiet prints only the results. The schedule is sized for
HIT-UAV's 640x512 frames: with --source images whose median long side exceeds 1024 px, the
new project's detector runs on images scaled down to about 1024 px (c3det.image_scale,
training crops scaled to match), and one line says so.

Running it again continues (or, when finished, just reprints) the same project; --fresh
starts over. --stats-only imports without running the loop; a later run continues from
that import. After an edit of params.yaml `data` a run imports again and rebuilds features
and order; once a batch exists it only appends new images, and stops on any other change,
saying what changed (docs/operations.md, "Rerunning after a params.yaml edit").
"""
from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

from flows.commands.base import CliProject, Verb, project_option, quiet_option

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample" / "hit-uav"

# The small CPU schedule (dotted params.yaml keys); every other knob keeps its default.
DEMO_PARAMS = {
    "project.name": "tinyloop-demo",
    "features.image_size": 112, "features.num_workers": 0,
    "order.first_batch_size": 16, "order.batch_size": 16,
    # model 1 (16 images) gets 160 steps from ImageNet; warm-started models 6 epochs each.
    # The plain detector is trained first and the click branch (the light one) on top of it:
    # at 0 clicks the boxes are the detector's (docs/benchmarks/c3det_accuracy.md)
    "c3det.train.epochs": 40, "c3det.train.lr_steps": [32], "flows.warm_start_epochs": 6,
    "flows.train_recipe": "detector_first", "c3det.lf_backbone": "light",
    # the click branch on a quarter of the detector's epochs: it took ~45 % of the demo's
    # training for clicks that rarely pay (the boxes shown are the detector's either way)
    "flows.click_branch_share": 0.25,
    "c3det.train.crop_size": 128, "c3det.train.batch_size": 4, "c3det.train.warmup_iters": 10,
    "c3det.roi_batch_size": 128,
    "c3det.eval.click_steps": [0, 3], "c3det.eval.sessions": 1,
    "flows.iterations": 3, "flows.eval_max_images": 0, "flows.min_score": "auto",
    # a rational annotator: no more clicks on an image, then in the batch, once they don't pay
    "simulator.stop_unpaid_clicks": True, "simulator.give_up_after_unpaid": 2,
    "simulator.give_up_when_behind": True,
}


# The network sees at most about this many px along an image's long side in the demo: full
# 4000x2250 photos cost ~27x a 640x512 HIT-UAV frame per forward, ~20 min per iteration on CPU.
DEMO_MAX_SIDE = 1024


def scale_for_images(width: int, height: int, max_side: int = DEMO_MAX_SIDE) -> dict:
    """params overrides that keep the demo's CPU cost near HIT-UAV's for images of this
    (median) size: none up to `max_side`; else the detector runs scaled down to about
    max_side (c3det.image_scale, applied in training, prediction, clicks and evaluation
    alike), training crops grow so the network still sees 128 px, and tiles (in source px)
    grow so that a median image is one tile at the network. Downscaling, not tiling: tiles
    of a 4000x2250 image at full size would cost as much as the full image."""
    long_side = max(width, height)
    if long_side <= max_side:
        return {}
    scale = max(0.001, math.floor(1000 * max_side / long_side) / 1000)
    crop = DEMO_PARAMS["c3det.train.crop_size"]
    tile = math.ceil(max_side / scale)
    return {"c3det.image_scale": scale, "c3det.train.crop_size": round(crop / scale),
            "tiling.size": tile, "tiling.stride": tile // 2}


def describe_scale(width: int, height: int, scale: float) -> str:
    """The line the demo prints about image size (what `scale_for_images` chose)."""
    if scale == 1.0:
        return (f"images are {width}x{height} (median): the demo predicts on full images at "
                "native resolution")
    return (f"images are {width}x{height} (median): the demo runs the detector on them scaled "
            f"by {scale:g} (~{round(width * scale)}x{round(height * scale)}; c3det.image_scale "
            f"in params.yaml, 1.0 for full resolution), training on "
            f"{round(DEMO_PARAMS['c3det.train.crop_size'] / scale)} px crops; objects under "
            f"~{math.ceil(8 / scale)} px get hard to find")


def median_image_size(manifest: Path) -> tuple[int, int]:
    """Median width and height of the imported images (data/pool/manifest.json)."""
    from tinyloop.cocofile import read_labels
    images = [i.image for i in read_labels(manifest)]
    if not images:
        return 0, 0
    return (round(statistics.median(i.width for i in images)),
            round(statistics.median(i.height for i in images)))


def verbs() -> list[Verb]:
    return [Verb(None, "demo", cmd_demo, _arguments, default_project="runs/demo",
                 raw_description=True,
                 help="run the whole loop on the bundled HIT-UAV sample (simulated annotator)",
                 description=__doc__.split("\n\n", 1)[1])]


def _arguments(p: argparse.ArgumentParser) -> None:
    project_option(p, help="project directory (default: runs/demo; created if missing)")
    p.add_argument("--source", default=None,
                   help=f"dataset to use instead of the bundled sample ({SAMPLE})")
    p.add_argument("--iterations", type=int, default=None,
                   help=f"batches to run (default: {DEMO_PARAMS['flows.iterations']})")
    p.add_argument("--stats-only", action="store_true",
                   help="only import the sample and print its statistics (no loop)")
    p.add_argument("--fresh", action="store_true",
                   help="delete the project directory first and start over")
    from flows.commands.loop import add_keep_going
    add_keep_going(p)
    quiet_option(p)


def cmd_demo(args: argparse.Namespace, project: CliProject) -> int:
    directory = project.root
    source = Path(args.source) if args.source else SAMPLE
    if not source.is_dir():
        print(f"error: dataset {source} not found; pass --source DIR", file=sys.stderr)
        return 1
    if args.fresh and directory.exists():
        shutil.rmtree(directory)
    new_project = not (directory / "params.yaml").exists()
    if not new_project and args.source and not _same_source(directory, source):
        return 1
    from flows.project.init import init_project, set_params
    start = time.perf_counter()
    layout = init_project(directory, source=str(source),
                          params_overrides=DEMO_PARAMS if new_project else None)
    if new_project:  # fitted to the images once they are imported (maybe on a later run)
        _fit_pending(layout).touch()
    if args.iterations:
        set_params(layout.params, {"flows.iterations": args.iterations})
    root = str(layout.root)
    from flows.runtime import prefect_env
    prefect_env(root)
    from flows.commands.loop import import_pool_or_explain
    if import_pool_or_explain(root, args.keep_going) is None:
        return 1
    _fit_schedule_to_images(layout)
    _print_stats(layout)
    if args.stats_only:
        return 0
    from flows.project.project import Project
    data_source = Project.open(root).source
    print(f"\nproject {layout.root}: simulating the loop on {data_source} ...", flush=True)
    from flows.runtime import announce_prefect_start
    announce_prefect_start()
    from flows.loop import simulate
    from flows.accounting.report import format_table
    rows = simulate(root, keep_going=args.keep_going)
    print()
    print(format_table(rows))
    last = rows[-1] if rows else {}
    print(f"\ncumulative: WT reduction {last.get('wt_reduction_cum')}% (the loop paper's measure), "
          f"time incl. clicks {last.get('seconds_reduction_cum')}% vs labeling every box by hand")
    print(f"report: {layout.report_html}\nhistory: tinyloop history -C {directory}"
          f"\nfinished in {time.perf_counter() - start:.0f} s")
    return 0


def _same_source(project: Path, source: Path) -> bool:
    """An existing project keeps its data.source: say so when --source names another."""
    from flows.project.project import Project
    have = Project.open(project).source.resolve()
    if have == source.resolve():
        return True
    print(f"error: project {project} was made from {have}, not {source}; pass --fresh to "
          f"start it over from {source}, or --project NEWDIR to keep both", file=sys.stderr)
    return False


def _fit_pending(layout) -> Path:
    return layout.state / "demo-schedule-unfitted"


def _fit_schedule_to_images(layout) -> None:
    """Scale the demo project's schedule to the imported images, once; print what was done
    (the user's later params.yaml edits win)."""
    from flows.project.init import set_params
    width, height = median_image_size(layout.manifest)
    if _fit_pending(layout).exists():
        set_params(layout.params, scale_for_images(width, height))
        _fit_pending(layout).unlink()
    from flows.project.project import Project
    scale = Project.open(layout.root).params.c3det.image_scale
    print(describe_scale(width, height, scale))


def _print_stats(layout) -> None:
    """The dataset's statistics (images per split, classes, object sizes)."""
    from tinyloop.cocofile import read_labels
    from tinyloop.stats import dataset_stats, format_stats
    labels = layout.ground_truth if layout.ground_truth.exists() else layout.manifest
    print(f"\npool written to {layout.pool}\n")
    print(format_stats(dataset_stats(read_labels(labels))))
