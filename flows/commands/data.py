"""`tinyloop data ingest | stats | convert | export`: get labelled data in and out of a project.

Formats: voc, rolabelimg, yolo, dota, coco on import; the same plus yolo-dataset (the
ultralytics layout) and fiftyone-coco on export. docs/formats.md describes each convention.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flows.commands.base import CliProject, Verb, project_option
from tinyloop.formats.registry import reader_names, writer_names

FORMAT_HELP = ("voc (Pascal VOC XML), rolabelimg (XML with <robndbox>), yolo (txt, "
               "normalised), dota (labelTxt polygons), coco (JSON file)")


def verbs() -> list[Verb]:
    return [
        Verb("data", "ingest", cmd_data_ingest, _ingest_arguments, alias="ingest",
             other_names=("import",),
             help="import and check the raw dataset into data/pool/",
             description="Import the raw dataset named by params.yaml `data` (images + "
                         f"labels in one of: {FORMAT_HELP}; data.source is relative to "
                         "params.yaml) and check every file: each image is decoded, every "
                         "box checked against its image and the configured classes. Writes "
                         "data/pool/manifest.json (images only), data/pool/ground_truth.json "
                         "(the labels, when the source has any) and "
                         "data/pool/import_report.json. All problems are listed at the end, "
                         "each with its file and a fix; with problems nothing but the report "
                         "is written unless --keep-going."),
        Verb("data", "stats", cmd_data_stats, _stats_arguments, alias="stats",
             help="images per split, objects per class, ignore regions, object sizes",
             description="Print statistics of a labels file (default: the project's "
                         "data/pool/ground_truth.json, else its manifest) or, with --source, "
                         "of a raw dataset imported on the fly: images per split, objects per "
                         "class, ignore regions, and object sizes sqrt(w*h) in the buckets "
                         "<12, 12-20, 20-32, >32 px."),
        Verb("data", "convert", cmd_data_convert, _convert_arguments, alias="convert",
             help="convert a dataset's labels from one format to another",
             description="Import the dataset at SOURCE in format --from (checking every "
                         "file, as ingest does) and write its labels in format --to under "
                         "OUT. Classes and ignore classes come from params.yaml `data` "
                         "unless given."),
        Verb("data", "export", cmd_data_export, _export_arguments, alias="export",
             help="export a labels file to voc, yolo, coco, dota, fiftyone-coco ...",
             description="Write a tinyloop labels file (default: the project's "
                         "data/pool/ground_truth.json; any data/batches/NNN/labels.json "
                         "works) in another format: voc, rolabelimg, yolo (txt + "
                         "classes.txt), yolo-obb (YOLO-OBB corner points + classes.txt), "
                         "yolo-dataset (images/, labels/, data.yaml for ultralytics; ignore "
                         "regions masked in image copies), dota, coco (labels.json with "
                         "tinyloop's extensions), fiftyone-coco (plain COCO for FiftyOne's "
                         "COCODetectionDataset importer; ignore regions as iscrowd boxes)."),
    ]


PROJECT_HELP = "project directory (default: the directory of --params, else .)"


def _ingest_arguments(p: argparse.ArgumentParser) -> None:
    project_option(p, help=PROJECT_HELP)
    _source_args(p)
    p.add_argument("--keep-going", action="store_true",
                   help="write the pool even when some files have problems (they are left "
                        "out and listed in import_report.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _stats_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("labels", nargs="?", help="a labels file (COCO JSON); default: the project's")
    project_option(p, help=PROJECT_HELP)
    _source_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="dataset root (holds the images directory)")
    p.add_argument("out", help="output directory")
    p.add_argument("--from", dest="src_format", required=True, choices=reader_names(),
                   help=FORMAT_HELP)
    p.add_argument("--to", dest="dst_format", required=True, choices=writer_names(),
                   help="output format")
    p.add_argument("--labels", help="labels directory or COCO file, relative to SOURCE "
                                    "(default: params data.labels)")
    p.add_argument("--images-dir", help="images directory relative to SOURCE "
                                        "(default: params data.images_dir)")
    p.add_argument("--classes", help="comma-separated class names (default: params)")
    p.add_argument("--ignore-classes", help="comma-separated ignore classes (default: params)")
    p.add_argument("--keep-going", action="store_true",
                   help="convert even when some files have problems (they are left out)")


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", required=True, choices=writer_names(), help="output format")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--labels", help="labels file to export (default: the project's ground "
                                    "truth)")
    p.add_argument("--image-root", help="where the images are (yolo-dataset; default: the "
                                        "dataset root recorded at import)")
    project_option(p, help=PROJECT_HELP)


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", help="dataset root (default: params data.source, relative to "
                                    "the folder of params.yaml)")
    p.add_argument("--format", choices=reader_names(), help=f"label format (default: params "
                                                     f"data.format): {FORMAT_HELP}")
    p.add_argument("--labels", dest="labels_path",
                   help="labels directory or COCO file, relative to the source "
                        "(default: params data.labels)")


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


def source_root(project: CliProject, args: argparse.Namespace) -> Path:
    """--source is relative to the working directory; data.source to params.yaml's folder."""
    given = getattr(args, "source", None)
    source = Path(given or project.params.data.source)
    if source.is_absolute():
        return source
    return (Path.cwd() if given else project.params_dir) / source


def cmd_data_ingest(args: argparse.Namespace, project: CliProject) -> int:
    from tinyloop.atomic import write_json_atomic
    from tinyloop.ingest import DatasetError, import_dataset, nothing_imported, write_pool
    from tinyloop.params import ParamsError
    layout = project.layout
    if layout.batch_numbers():
        print(f"error: {project.root} has annotated batches ({layout.batches}); ingest would "
              "replace the pool under them. Edit `data` in params.yaml and run `tinyloop "
              "prepare`: it adds new images after the batches and refuses any other "
              "change, saying what changed", file=sys.stderr)
        return 1
    try:
        labels, report = import_dataset(source_root(project, args),
                                        data_params(project.params, args),
                                        progress=not args.no_progress)
    except (ParamsError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    if nothing_imported(report) or (report.problems and not args.keep_going):
        write_json_atomic(layout.import_report, report.to_json())
    if nothing_imported(report):
        print(f"\nerror: {nothing_imported(report)}", file=sys.stderr)
        return 1
    if report.problems and not args.keep_going:
        print(f"\nnothing imported: fix the problems above (all listed in "
              f"{layout.import_report}) or re-run with --keep-going to import the rest",
              file=sys.stderr)
        return 1
    for path in write_pool(labels, report, layout.manifest, layout.ground_truth,
                           layout.import_report):
        print(f"wrote {path}")
    return 0


def cmd_data_stats(args: argparse.Namespace, project: CliProject) -> int:
    from tinyloop.annotations import AnnotationError
    from tinyloop.ingest import DatasetError
    from tinyloop.params import ParamsError
    from tinyloop.stats import dataset_stats, format_stats
    try:
        labels = _stats_labels(args, project)
    except (ParamsError, DatasetError, AnnotationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if labels is None:
        print(f"error: no labels file given and {project.layout.manifest} does not exist; "
              "run `tinyloop ingest` first or pass a file or --source", file=sys.stderr)
        return 1
    stats = dataset_stats(labels)
    print(json.dumps(stats, indent=1) if args.json else format_stats(stats))
    return 0


def _stats_labels(args: argparse.Namespace, project: CliProject):
    """The labels `stats` describes: --source imported on the fly, the file given, or the
    project's ground truth, else its manifest; None when there is none of them."""
    from tinyloop.cocofile import read_labels
    from tinyloop.ingest import import_dataset
    if args.source:
        labels, report = import_dataset(source_root(project, args),
                                        data_params(project.params, args), progress=False)
        if report.problems:
            print(report.summary(), file=sys.stderr)
        return labels
    layout = project.layout
    path = Path(args.labels) if args.labels else \
        next((p for p in (layout.ground_truth, layout.manifest) if p.exists()), None)
    return read_labels(path) if path is not None else None


def cmd_data_convert(args: argparse.Namespace, project: CliProject) -> int:
    from dataclasses import replace
    from tinyloop.config import DataParams
    from tinyloop.ingest import DatasetError, import_dataset, nothing_imported
    from tinyloop.params import ParamsError, build
    try:
        data = replace(project.params.data, **_convert_changes(args))
        build(DataParams, vars(data), "data", file="command line")  # runs the checks
        labels, report = import_dataset(args.source, data)
    except (ParamsError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    if nothing_imported(report):
        print(f"\nerror: {nothing_imported(report)}", file=sys.stderr)
        return 1
    if report.problems and not args.keep_going:
        print("\nnothing written: fix the problems above or re-run with --keep-going",
              file=sys.stderr)
        return 1
    return _export(labels, args.dst_format, args.out, None)


def _convert_changes(args: argparse.Namespace) -> dict:
    """params.data fields the convert command line sets."""
    changes = {"format": args.src_format}
    if args.src_format != "voc":
        changes["oriented_labels"] = None
    for key, value in (("labels", args.labels), ("images_dir", args.images_dir)):
        if value:
            changes[key] = value
    for key, value in (("classes", args.classes), ("ignore_classes", args.ignore_classes)):
        if value is not None:
            changes[key] = [v.strip() for v in value.split(",") if v.strip()]
    return changes


def cmd_data_export(args: argparse.Namespace, project: CliProject) -> int:
    from tinyloop.annotations import AnnotationError
    from tinyloop.cocofile import read_labels
    path = Path(args.labels) if args.labels else project.layout.ground_truth
    try:
        labels = read_labels(path)
    except AnnotationError as e:
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
