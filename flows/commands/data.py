"""`tinyloop data ...`: get labelled data in and out of a project, and make the pool's order.

ingest | stats | convert | export: formats voc, rolabelimg, yolo, dota, coco on import; the
same plus yolo-dataset (the ultralytics layout) and fiftyone-coco on export (docs/formats.md
describes each convention). synthetic: a synthetic tiny-object dataset to try the loop on.
embed | order: the DVC stages `features` and `order`; both read params.yaml (features / order
sections) and the pool manifest that ingest wrote, write under data/ (flows/project/layout.py)
and are incremental.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from flows.commands.base import CliProject, Verb, project_option
from tinyloop.formats.registry import reader_names, writer_names

FORMAT_HELP = ("voc (Pascal VOC XML), rolabelimg (XML with <robndbox>), yolo (txt, "
               "normalised), dota (labelTxt polygons), coco (JSON file)")
PROJECT_HELP = "project directory (default: the directory of --params, else .)"


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
        Verb("data", "synthetic", cmd_data_synthetic, _synthetic_arguments,
             alias="synthetic",
             help="write a synthetic tiny-object dataset (PNGs + COCO labels)",
             description="Write N deterministic synthetic grayscale images of tiny objects "
                         "on textured backgrounds into OUT/images/ with their exact labels "
                         "in OUT/labels.json (tinyloop's COCO file). Each class is drawn as "
                         "its own shape (disc, square, cross, ring, triangle, diamond; then "
                         "the same shapes dark), so a detector learns them in minutes on a "
                         "CPU. The same seed always gives the same files. Prints the "
                         "params.yaml `data` section that imports the result."),
        Verb("data", "embed", cmd_data_embed, _embed_arguments, alias="embed",
             help="embed every pool image (EfficientNet-Lite, ResNet or SimNet) into "
                  "data/features/",
             description="Embed every image of the pool (data/pool/manifest.json) with the "
                         "extractor in params.yaml `features` (efficientnet_lite0/1/2, "
                         "resnet18, resnet50 or simnet; SimNet is trained on the pool first "
                         "when its checkpoint is missing). Writes data/features/embeddings.npy "
                         "(N x D float32, L2-normalised, memory-mappable) and ids.json. "
                         "Incremental: only images not yet in the store are embedded. "
                         "Unreadable images are listed and skipped "
                         "(data/features/problems.json). This is the DVC stage `features`."),
        Verb("data", "order", cmd_data_order, _order_arguments, alias="order",
             help="order the pool and cut it into batches (data/order.json)",
             description="Order the whole pool with params.yaml `order` (dissimilar = "
                         "farthest-first, similar, random, temporal: features/ordering.py "
                         "lists them) and cut the order into "
                         "batches: the first holds order.first_batch_size images, the rest "
                         "order.batch_size. Writes data/order.json {image_id: {position, "
                         "batch}} atomically. When the pool has grown, existing positions "
                         "never move; new images are appended in new batches. This is the "
                         "DVC stage `order`."),
    ]


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


def _synthetic_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="output directory (created; existing files with "
                                          "the same names are replaced)")
    p.add_argument("-n", "--images", type=int, default=100, help="number of images "
                                                                 "(default: %(default)s)")
    p.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("W", "H"),
                   help="image width and height in px (default: 256 256)")
    p.add_argument("--classes", nargs="+", default=["disc", "square", "cross", "ring"],
                   help="class names, at most 12 (default: disc square cross ring)")
    p.add_argument("--objects", type=int, nargs=2, default=[5, 15], metavar=("LO", "HI"),
                   help="objects per image, inclusive range (default: 5 15)")
    p.add_argument("--object-size", type=int, nargs=2, default=[10, 30], metavar=("LO", "HI"),
                   help="object width and height in px, inclusive range (default: 10 30)")
    p.add_argument("--ignore", type=int, default=0,
                   help="ignore regions (DontCare) per image (default: %(default)s)")
    p.add_argument("--oriented", action="store_true",
                   help="turn each object by a random angle and label it with its oriented "
                        "box (cx, cy, w, h, angle) as well")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")


def cmd_data_synthetic(args: argparse.Namespace, project: CliProject) -> int:
    from tinyloop.synthetic import make_synthetic
    try:
        labels, _ = make_synthetic(args.images, size=tuple(args.size), classes=args.classes,
                                   objects_per_image=tuple(args.objects),
                                   object_size=tuple(args.object_size), seed=args.seed,
                                   out_dir=args.out, ignore_per_image=args.ignore,
                                   oriented=args.oriented)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{name} {n}" for name, n in labels.class_counts().items())
    print(f"wrote {len(labels)} images to {args.out}/images and labels to "
          f"{args.out}/labels.json ({counts})")
    print("\nto use it, put this in params.yaml:\n"
          "data:\n"
          f"  source: {args.out}\n"
          "  format: coco\n"
          "  labels: labels.json\n"
          "  oriented_labels: null\n"
          f"  classes: [{', '.join(labels.categories)}]\n"
          "  ignore_classes: [DontCare]\n"
          "  split_dir: null")
    return 0


def _embed_arguments(p: argparse.ArgumentParser) -> None:
    project_option(p, "--root", help=PROJECT_HELP)
    p.add_argument("--retrain-simnet", action="store_true",
                   help="train SimNet again even when its checkpoint exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _order_arguments(p: argparse.ArgumentParser) -> None:
    project_option(p, "--root", help=PROJECT_HELP)


def _project_pool(project: CliProject):
    """(params, layout, pool); the params file must exist (these are DVC stages of a
    project), and so must the pool."""
    from tinyloop.cocofile import read_labels
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    params = project.require_params()
    layout = project.layout
    if not layout.manifest.exists():
        raise FileNotFoundError(f"{layout.manifest} not found; import the pool first "
                                "(`tinyloop ingest`)")
    pool = read_labels(layout.manifest)
    return params, layout, pool


def _pool_image_root(params, layout, pool) -> Path:
    source = Path(params.data.source)
    root = source if source.is_absolute() else layout.root / source
    if not root.is_dir() and pool.info.get("dataset_root"):
        root = Path(pool.info["dataset_root"])
    return root


def cmd_data_embed(args: argparse.Namespace, project: CliProject) -> int:
    from features.embed import EmbedError, update_store
    from features.extractors import WeightsError
    from features.simnet import ensure_simnet
    from tinyloop.params import ParamsError
    try:
        params, layout, pool = _project_pool(project)
        fp = params.features
        image_root = _pool_image_root(params, layout, pool)
        fp, history = ensure_simnet(
            fp, layout.root, lambda: [image_root / im.image.path for im in pool.images],
            retrain=args.retrain_simnet, progress=not args.no_progress)
        if history:
            print(f"SimNet trained: loss {history['epoch_loss'][0]:.4f} -> "
                  f"{history['epoch_loss'][-1]:.4f}, saved to {fp.simnet.checkpoint}")
        vectors, ids, report = update_store(pool, image_root, fp, layout.features,
                                            progress=not args.no_progress)
    except (ParamsError, EmbedError, WeightsError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    print(f"{layout.embeddings}: {vectors.shape[0]} x {vectors.shape[1]}")
    return 0 if len(ids) else 1


def cmd_data_order(args: argparse.Namespace, project: CliProject) -> int:
    from features.embed import load_store
    from features.order import OrderError, order_pool
    from features.ordering import ordering
    from tinyloop.params import ParamsError
    try:
        params, layout, pool = _project_pool(project)
        records = [im.image for im in pool.images]
        op = params.order
        if ordering(op.method).uses_embeddings:
            store = load_store(layout.features)
            if store is None:
                raise OrderError(f"no embeddings in {layout.features}; run `tinyloop embed`")
            vectors, ids, _ = store
        else:
            vectors, ids = None, [r.id for r in records]
        result = order_pool(vectors, ids, op, layout.order, records=records)
        unembedded = sorted({r.id for r in records} - set(ids))
        if unembedded:
            result.notes.append(f"{len(unembedded)} pool images have no embedding (unreadable;"
                                f" see {layout.features}/problems.json) and are not ordered: "
                                f"{', '.join(unembedded[:5])}")
    except (ParamsError, OrderError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(result.summary())
    print(f"wrote {layout.order}")
    return 0
