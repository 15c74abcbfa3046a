"""`tinyloop ingest | stats | convert | export`: get labelled data in and out of a project.

Formats: voc, rolabelimg, yolo, dota, coco on import; the same plus yolo-dataset (the
ultralytics layout) and fiftyone-coco on export. docs/formats.md describes each convention.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tinyloop.formats import EXPORT_FORMATS, FORMATS

FORMAT_HELP = ("voc (Pascal VOC XML), rolabelimg (XML with <robndbox>), yolo (txt, "
               "normalised), dota (labelTxt polygons), coco (JSON file)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest", help="import and check the raw dataset into data/pool/",
        description="Import the raw dataset named by params.yaml `data` (images + labels in "
                    f"one of: {FORMAT_HELP}; data.source is relative to params.yaml) and check every file: each image is decoded, "
                    "every box checked against its image and the configured classes. Writes "
                    "data/pool/manifest.json (images only), data/pool/ground_truth.json (the "
                    "labels, when the source has any) and data/pool/import_report.json. All "
                    "problems are listed at the end, each with its file and a fix; with "
                    "problems nothing but the report is written unless --keep-going.")
    _project_arg(p)
    _source_args(p)
    p.add_argument("--keep-going", action="store_true",
                   help="write the pool even when some files have problems (they are left "
                        "out and listed in import_report.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_ingest)

    s = sub.add_parser(
        "stats", help="images per split, objects per class, ignore regions, object sizes",
        description="Print statistics of a labels file (default: the project's "
                    "data/pool/ground_truth.json, else its manifest) or, with --source, of a "
                    "raw dataset imported on the fly: images per split, objects per class, "
                    "ignore regions, and object sizes sqrt(w*h) in the buckets <12, 12-20, "
                    "20-32, >32 px.")
    s.add_argument("labels", nargs="?", help="a labels file (COCO JSON); default: the project's")
    _project_arg(s)
    _source_args(s)
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=run_stats)

    c = sub.add_parser(
        "convert", help="convert a dataset's labels from one format to another",
        description="Import the dataset at SOURCE in format --from (checking every file, as "
                    "ingest does) and write its labels in format --to under OUT. Classes and "
                    "ignore classes come from params.yaml `data` unless given.")
    c.add_argument("source", help="dataset root (holds the images directory)")
    c.add_argument("out", help="output directory")
    c.add_argument("--from", dest="src_format", required=True, choices=FORMATS,
                   help=FORMAT_HELP)
    c.add_argument("--to", dest="dst_format", required=True, choices=EXPORT_FORMATS,
                   help="output format")
    c.add_argument("--labels", help="labels directory or COCO file, relative to SOURCE "
                                    "(default: params data.labels)")
    c.add_argument("--images-dir", help="images directory relative to SOURCE "
                                        "(default: params data.images_dir)")
    c.add_argument("--classes", help="comma-separated class names (default: params)")
    c.add_argument("--ignore-classes", help="comma-separated ignore classes (default: params)")
    c.add_argument("--keep-going", action="store_true",
                   help="convert even when some files have problems (they are left out)")
    c.set_defaults(func=run_convert)

    e = sub.add_parser(
        "export", help="export a labels file to voc, yolo, coco, dota, fiftyone-coco ...",
        description="Write a tinyloop labels file (default: the project's "
                    "data/pool/ground_truth.json; any data/batches/NNN/labels.json works) in "
                    "another format: voc, rolabelimg, yolo (txt + classes.txt), yolo-obb "
                    "(YOLO-OBB corner points + classes.txt), "
                    "yolo-dataset (images/, labels/, data.yaml for ultralytics; ignore "
                    "regions masked in image copies), dota, coco (labels.json with tinyloop's "
                    "extensions), fiftyone-coco (plain COCO for FiftyOne's "
                    "COCODetectionDataset importer; ignore regions as iscrowd boxes).")
    e.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="output format")
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--labels", help="labels file to export (default: the project's ground "
                                    "truth)")
    e.add_argument("--image-root", help="where the images are (yolo-dataset; default: the "
                                        "dataset root recorded at import)")
    _project_arg(e)
    e.set_defaults(func=run_export)


def _project_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", "-C", default=None,
                   help="project directory (default: the directory of --params)")


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", help="dataset root (default: params data.source, relative to "
                                    "the folder of params.yaml)")
    p.add_argument("--format", choices=FORMATS, help=f"label format (default: params "
                                                     f"data.format): {FORMAT_HELP}")
    p.add_argument("--labels", dest="labels_path",
                   help="labels directory or COCO file, relative to the source "
                        "(default: params data.labels)")


def load_context(args: argparse.Namespace):
    """(params, project directory) from --params / --project; defaults when no params file."""
    from flows.params import Params, load_params
    params_path = Path(args.params)
    params = load_params(params_path) if params_path.exists() else Params()
    project = Path(args.project) if getattr(args, "project", None) else \
        params_path.resolve().parent
    return params, project


def data_params(params, args: argparse.Namespace):
    """params.data with the command line's --format / --labels applied."""
    from dataclasses import replace
    data = params.data
    if getattr(args, "format", None) and args.format != data.format:
        data = replace(data, format=args.format,
                       oriented_labels=None if args.format != "voc" else data.oriented_labels)
    if getattr(args, "labels_path", None):
        data = replace(data, labels=args.labels_path)
    return data


def source_root(params, project: Path, args: argparse.Namespace) -> Path:
    """--source is relative to the working directory; data.source to params.yaml's folder."""
    source = Path(getattr(args, "source", None) or params.data.source)
    if not source.is_absolute():
        params_dir = Path(args.params).resolve().parent
        base = Path.cwd() if getattr(args, "source", None) else \
            params_dir if Path(args.params).exists() else project
        source = base / source
    return source


def run_ingest(args: argparse.Namespace) -> int:
    from flows.layout import ProjectLayout
    from tinyloop.atomic import write_json_atomic
    from tinyloop.ingest import DatasetError, import_dataset, write_pool
    from tinyloop.params import ParamsError
    try:
        params, project = load_context(args)
        layout = ProjectLayout(project)
        if layout.batch_numbers():
            print(f"error: {project} has annotated batches ({layout.batches}); ingest would "
                  "replace the pool under them. Edit `data` in params.yaml and run `tinyloop "
                  "prepare`: it adds new images after the batches and refuses any other "
                  "change, saying what changed", file=sys.stderr)
            return 1
        source = source_root(params, project, args)
        labels, report = import_dataset(source, data_params(params, args),
                                        progress=not args.no_progress)
    except (ParamsError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    if report.problems and not args.keep_going:
        write_json_atomic(layout.import_report, report.to_json())
        print(f"\nnothing imported: fix the problems above (all listed in "
              f"{layout.import_report}) or re-run with --keep-going to import the rest",
              file=sys.stderr)
        return 1
    for path in write_pool(labels, report, layout.manifest, layout.ground_truth,
                           layout.import_report):
        print(f"wrote {path}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from flows.layout import ProjectLayout
    from tinyloop.annotations import AnnotationError
    from tinyloop.cocofile import read_labels
    from tinyloop.ingest import DatasetError, import_dataset
    from tinyloop.params import ParamsError
    from tinyloop.stats import dataset_stats, format_stats
    try:
        params, project = load_context(args)
        if args.source:
            labels, report = import_dataset(source_root(params, project, args),
                                            data_params(params, args), progress=False)
            if report.problems:
                print(report.summary(), file=sys.stderr)
        else:
            layout = ProjectLayout(project)
            path = Path(args.labels) if args.labels else \
                next((p for p in (layout.ground_truth, layout.manifest) if p.exists()), None)
            if path is None:
                print(f"error: no labels file given and {layout.manifest} does not exist; "
                      "run `tinyloop ingest` first or pass a file or --source",
                      file=sys.stderr)
                return 1
            labels = read_labels(path)
    except (ParamsError, DatasetError, AnnotationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    stats = dataset_stats(labels)
    print(json.dumps(stats, indent=1) if args.json else format_stats(stats))
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from tinyloop.ingest import DatasetError, import_dataset
    from tinyloop.params import ParamsError, build
    from tinyloop.config import DataParams
    try:
        params, _ = load_context(args)
        changes = {"format": args.src_format}
        if args.src_format != "voc":
            changes["oriented_labels"] = None
        for key, value in (("labels", args.labels), ("images_dir", args.images_dir)):
            if value:
                changes[key] = value
        for key, value in (("classes", args.classes), ("ignore_classes", args.ignore_classes)):
            if value is not None:
                changes[key] = [v.strip() for v in value.split(",") if v.strip()]
        data = replace(params.data, **changes)
        build(DataParams, vars(data), "data", file="command line")  # runs the checks
        labels, report = import_dataset(args.source, data)
    except (ParamsError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    if report.problems and not args.keep_going:
        print("\nnothing written: fix the problems above or re-run with --keep-going",
              file=sys.stderr)
        return 1
    return _export(labels, args.dst_format, args.out, None)


def run_export(args: argparse.Namespace) -> int:
    from flows.layout import ProjectLayout
    from tinyloop.annotations import AnnotationError
    from tinyloop.cocofile import read_labels
    from tinyloop.params import ParamsError
    try:
        _, project = load_context(args)
        path = Path(args.labels) if args.labels else ProjectLayout(project).ground_truth
        labels = read_labels(path)
    except (ParamsError, AnnotationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return _export(labels, args.format, args.out, args.image_root)


def _export(labels, fmt: str, out: str, image_root: str | None) -> int:
    from tinyloop.formats.export import export_labels
    try:
        written = export_labels(labels, fmt, out, image_root)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"exported {len(labels)} images as {fmt}: {written}")
    return 0
