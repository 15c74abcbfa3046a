"""`tinyloop data synthetic OUT`: write a synthetic tiny-object dataset to try the loop on."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.commands.base import CliProject, Verb


def verbs() -> list[Verb]:
    return [Verb(
        "data", "synthetic", cmd_data_synthetic, _arguments, alias="synthetic",
        help="write a synthetic tiny-object dataset (PNGs + COCO labels)",
        description="Write N deterministic synthetic grayscale images of tiny objects on "
                    "textured backgrounds into OUT/images/ with their exact labels in "
                    "OUT/labels.json (tinyloop's COCO file). Each class is drawn as its own "
                    "shape (disc, square, cross, ring, triangle, diamond; then the same "
                    "shapes dark), so a detector learns them in minutes on a CPU. The same "
                    "seed always gives the same files. Prints the params.yaml `data` section "
                    "that imports the result.")]


def _arguments(p: argparse.ArgumentParser) -> None:
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
