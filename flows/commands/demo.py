"""`tinyloop demo`: the README's main command: the whole loop on the bundled HIT-UAV sample.

Makes a project (default `runs/demo`), imports the bundled real sample (sample/hit-uav:
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
See docs/benchmarks/flows.md for numbers at larger scale. Running it again continues (or,
when finished, just reprints) the same project; --fresh starts over.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample" / "hit-uav"

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
    "c3det.train.crop_size": 128, "c3det.train.batch_size": 4, "c3det.train.warmup_iters": 10,
    "c3det.roi_batch_size": 128,
    "c3det.eval.click_steps": [0, 3], "c3det.eval.sessions": 1,
    "flows.iterations": 3, "flows.eval_max_images": 0, "flows.min_score": "auto",
    # a rational annotator: no more clicks on an image, then in the batch, once they don't pay
    "simulator.stop_unpaid_clicks": True, "simulator.give_up_after_unpaid": 2,
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run the whole loop on the bundled HIT-UAV sample (simulated annotator)",
        description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", "-C", default="runs/demo",
                   help="project directory (default: %(default)s; created if missing)")
    p.add_argument("--source", default=None,
                   help=f"dataset to use instead of the bundled sample ({SAMPLE})")
    p.add_argument("--iterations", type=int, default=None,
                   help=f"batches to run (default: {DEMO_PARAMS['flows.iterations']})")
    p.add_argument("--stats-only", action="store_true",
                   help="only import the sample and print its statistics (no loop)")
    p.add_argument("--fresh", action="store_true",
                   help="delete the project directory first and start over")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    project = Path(args.project)
    source = Path(args.source) if args.source else SAMPLE
    if not source.is_dir():
        print(f"error: dataset {source} not found; pass --source DIR", file=sys.stderr)
        return 1
    if args.fresh and project.exists():
        shutil.rmtree(project)
    overrides = dict(DEMO_PARAMS)
    if args.iterations:
        overrides["flows.iterations"] = args.iterations
    from flows.project import init_project
    start = time.perf_counter()
    layout = init_project(project, source=str(source),
                          params_overrides=None if (project / "params.yaml").exists()
                          else overrides)
    root = str(layout.root)
    from flows.runtime import prefect_env
    prefect_env(root)
    _print_stats(layout, source)
    if args.stats_only:
        return 0
    print(f"\nproject {layout.root}: simulating the loop on {source} ...", flush=True)
    from flows.loop import simulate
    from flows.report import format_table
    rows = simulate(root)
    print()
    print(format_table(rows))
    last = rows[-1] if rows else {}
    print(f"\ncumulative: WT reduction {last.get('wt_reduction_cum')}% (seed 002's measure), "
          f"time incl. clicks {last.get('seconds_reduction_cum')}% vs labeling every box by hand")
    print(f"report: {layout.report_html}\nhistory: tinyloop history -C {project}"
          f"\nfinished in {time.perf_counter() - start:.0f} s")
    return 0


def _print_stats(layout, source: Path) -> None:
    """The import check and the dataset's statistics (images per split, classes, sizes)."""
    from flows import steps
    from tinyloop.cocofile import read_labels
    from tinyloop.ingest import import_dataset
    from tinyloop.stats import dataset_stats, format_stats
    p = steps.Project.open(layout.root)
    _, report = import_dataset(source, p.params.data, progress=False)
    print(report.summary())
    steps.ingest(p)
    print(f"\npool written to {layout.pool}\n")
    print(format_stats(dataset_stats(read_labels(layout.ground_truth))))
