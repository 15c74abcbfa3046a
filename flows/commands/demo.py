"""`tinyloop demo`: the README's main command on the bundled HIT-UAV sample.

For now: import the sample into a project directory (a temporary one unless --project is
given) and print its statistics. Later issues extend `run_demo` to the whole loop with a
simulated annotator.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample" / "hit-uav"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="import the bundled HIT-UAV sample and print its statistics",
        description="Import the bundled real sample (sample/hit-uav: HIT-UAV infrared drone "
                    "images, CC BY 4.0, Suo et al. 2023) into a project directory, checking "
                    "every image and box, and print its statistics: images per split, "
                    "objects per class, ignore regions (DontCare) and object sizes in the "
                    "buckets <12, 12-20, 20-32, >32 px.")
    p.add_argument("--project", "-C", default=None,
                   help="project directory to import into (default: a temporary directory, "
                        "removed afterwards)")
    p.add_argument("--source", default=None,
                   help=f"dataset to use instead of the bundled sample ({SAMPLE})")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    if args.project:
        return _demo(args, Path(args.project))
    with tempfile.TemporaryDirectory(prefix="tinyloop-demo-") as tmp:
        return _demo(args, Path(tmp))


def _demo(args: argparse.Namespace, project: Path) -> int:
    from flows.commands.data import load_context
    from flows.layout import ProjectLayout
    from tinyloop.ingest import DatasetError, import_dataset, write_pool
    from tinyloop.params import ParamsError
    from tinyloop.stats import dataset_stats, format_stats
    source = Path(args.source) if args.source else SAMPLE
    layout = ProjectLayout(project)
    try:
        params, _ = load_context(argparse.Namespace(params=args.params, project=None))
        labels, report = import_dataset(source, params.data)
    except (ParamsError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    write_pool(labels, report, layout.manifest, layout.ground_truth, layout.import_report)
    print(f"\npool written to {layout.pool}\n")
    print(format_stats(dataset_stats(labels)))
    return 0 if report.ok else 1
