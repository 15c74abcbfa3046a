"""`tinyloop model train | evaluate`: the interactive detector from the command line."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from flows.commands.base import CliProject, Verb, quiet_option

KINDS = ("plain", "early_fusion", "late_fusion", "c3det")


def verbs() -> list[Verb]:
    return [
        Verb("model", "train", cmd_model_train, _train_arguments, alias="train",
             raw_description=True,
             help="train the click-steered detector on a labels file",
             description="Train a detector on a labels file (tinyloop's COCO JSON, e.g. "
                         "data/pool/ground_truth.json or a batch's labels.json) with "
                         "simulated class-labelled clicks (K = min(U[0,20], #objects) per "
                         "image, plus a share of click-free samples). The schedule is "
                         "c3det.train in params.yaml (SGD, warm-up, step decay, crops). Uses "
                         "CUDA + AMP when a GPU is present; launch with "
                         "`torchrun --nproc_per_node N` for several GPUs. Every epoch "
                         "writes OUT/model.pt, OUT/last.pt (for resuming) and a line of "
                         "OUT/metrics.jsonl; running the same command again resumes after the "
                         "last finished epoch.\n\nexample:\n  tinyloop train --labels "
                         "data/pool/ground_truth.json --images data/sample/hit-uav "
                         "--out models/try1"),
        Verb("model", "evaluate", cmd_model_evaluate, _evaluate_arguments, alias="evaluate",
             raw_description=True,
             help="mAP@0.5 against the number of clicks (0..20) of trained models",
             description="For each test image, clicks are added one at a time on a random "
                         "not-yet-clicked object (its centre and class); after each click mAP@0.5 "
                         "over all test images is computed (pycocotools). Several independent "
                         "sessions give mean +- std. Detections lying mostly (c3det.eval."
                         "ignore_overlap) inside an ignore region are dropped before scoring. "
                         "Also reports AP per class and by object size (sqrt(w*h) < 12, 12-20, "
                         "20-32, > 32 px). Writes OUT.json and a PNG plot of all models' curves."
                         "\n\nexample:\n  tinyloop evaluate --labels data/pool/ground_truth.json "
                         "--images data/sample/hit-uav --split val --model models/c3det/model.pt "
                         "--model models/plain/model.pt --passthrough models/plain/model.pt "
                         "--out reports/map_vs_clicks"),
    ]


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", required=True, help="labels file to train on")
    p.add_argument("--images", required=True,
                   help="folder the labels' image paths are relative to (the dataset root)")
    p.add_argument("--out", required=True, help="output folder for checkpoints and metrics")
    p.add_argument("--kind", choices=KINDS, default="c3det",
                   help="c3det (default), late_fusion, early_fusion or plain (the plain "
                        "detector, also used by Passthrough); a detector without click "
                        "branches trains the same model for every kind")
    p.add_argument("--split", default=None,
                   help="train only on images whose metadata split is this (e.g. train)")
    p.add_argument("--epochs", type=int, default=None,
                   help="override the epochs of params.yaml (c3det.train.epochs, or "
                        "the epochs of the section of c3det.detector)")
    p.add_argument("--init", default=None,
                   help="start from another run's last.pt where layer names and shapes match")
    p.add_argument("--no-resume", action="store_true",
                   help="start over even when OUT/last.pt exists")
    quiet_option(p)


def _evaluate_arguments(e: argparse.ArgumentParser) -> None:
    e.add_argument("--labels", required=True, help="labels file with the test ground truth")
    e.add_argument("--images", required=True, help="dataset root of the labels' image paths")
    e.add_argument("--model", action="append", default=[],
                   help="a model.pt to evaluate (repeat for several)")
    e.add_argument("--passthrough", action="append", default=[],
                   help="a plain model.pt to evaluate as Passthrough (clicks relabel boxes)")
    e.add_argument("--split", default=None, help="evaluate only images of this split")
    e.add_argument("--max-images", type=int, default=None, help="first N images only")
    e.add_argument("--out", required=True, help="output path without extension")


def _labels(args, params):
    from tinyloop.cocofile import read_labels
    labels = read_labels(args.labels)
    if args.split:
        labels = dataclasses.replace(labels, images=[
            im for im in labels.images if im.image.metadata.get("split") == args.split])
    if not labels.images:
        raise SystemExit(f"error: {args.labels}: no images"
                         f"{' in split ' + repr(args.split) if args.split else ''}")
    return labels


def cmd_model_train(args: argparse.Namespace, project: CliProject) -> int:
    from c3det.detectors import family_for
    from tinyloop.params import ParamsError
    try:
        params = project.params.c3det
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    family = family_for(params)
    if args.epochs is not None:
        params = family.with_epochs(params, args.epochs)
    labels = _labels(args, params)
    r = family.train(labels, args.images, params, args.out, kind=args.kind,
                     init_from=args.init, resume=not args.no_resume,
                     tiling=project.params.tiling)
    last = r["epochs"][-1] if r["epochs"] else {}
    loss = f"; last loss {last['loss']:.4f}" if "loss" in last else ""
    print(f"trained {family.model_name(params, args.kind)} for {len(r['epochs'])} epochs on "
          f"{len(labels)} images{loss}; model: {r['model']}")
    return 0


def cmd_model_evaluate(args: argparse.Namespace, project: CliProject) -> int:
    from c3det.checkpoint import CheckpointError
    from c3det.detectors import eval_model
    from c3det.evaluate import map_vs_clicks, plot_curves
    from tinyloop.atomic import write_json_atomic
    if not args.model and not args.passthrough:
        print("error: give at least one --model or --passthrough checkpoint", file=sys.stderr)
        return 2
    params = project.params.c3det
    labels = _labels(args, params)
    if args.max_images:
        labels = dataclasses.replace(labels, images=labels.images[:args.max_images])
    results = []
    for path, wrap in [(m, False) for m in args.model] + [(m, True) for m in args.passthrough]:
        try:
            model, meta = eval_model(path, passthrough=wrap)
        except CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        if meta["classes"] != labels.categories:
            print(f"error: {path}: trained for classes {meta['classes']}, the labels have "
                  f"{labels.categories}", file=sys.stderr)
            return 1
        name = f"passthrough ({Path(path).parent.name})" if wrap else \
            f"{meta['kind']} ({Path(path).parent.name})"
        r = map_vs_clicks(model, labels, args.images, params.eval, name=name)
        results.append(r)
        print(f"{name}: mAP@{params.eval.iou:g} at clicks {r['steps']}: "
              + " ".join(f"{m:.1f}" for m in r["map_mean"]))
    out = Path(args.out)
    write_json_atomic(out.with_suffix(".json"), {"models": results})
    plot_curves(results, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0
