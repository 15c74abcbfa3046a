"""`tinyloop report build | workload`: what the loop saved. `build` (also `tinyloop report`
alone) writes reports/; `workload BATCH`: what correcting a batch changed and what it cost."""
from __future__ import annotations

import argparse
import json
import sys

from flows.commands.base import CliProject, Verb, project_option
from flows.commands.loop import PROJECT_HELP, flow_root

WORKLOAD = """\
Diff a batch's corrected labels (data/batches/NNN/labels.json) against the model's first
pre-annotation (preannotations.json) and print the workload.

Diff categories, per image and in total (boxes in ignore regions left out; one-to-one
class-agnostic Hungarian matching on IoU, pairs need IoU > 0):
  accepted   same class, IoU >= the threshold      moved      same class, IoU below it
  relabeled  class changed                          deleted    pre-annotated box removed
  added      box drawn by the annotator             clicks     counted by round

Workload (the loop paper): WB = additions + removals (+ every object in batch 1, labeled from
scratch), WT = An*T + Rn*T/2 (+ B1n*T); a moved or relabeled box counts as one removal plus
one addition there. `seconds` adds what people really do, with the cost model of the
`workload` section of params.yaml: 4 s to look at an image, 8 s for a round's first click,
3 s per further click, then edits charged against the model output after the clicks
(refined.json, when the store recorded it). Reductions are against drawing every object by
hand (objects * T). Both match thresholds of workload.report_ious are shown; the
cumulative line sums batches 1..BATCH."""


def verbs() -> list[Verb]:
    return [
        # `tinyloop report` (the noun alone) is this verb, as before the nouns existed
        Verb("report", "build", cmd_report_build, _build_arguments, noun_default=True,
             help="rebuild reports/index.html and report.md (the default)",
             description="Write the per-batch workload table and plots as a "
                         "self-contained HTML file and markdown; print the table."),
        Verb("report", "workload", cmd_report_workload, _workload_arguments,
             alias="workload",
             help="diff a corrected batch against its pre-annotation and print WB, WT "
                  "and seconds saved",
             description=WORKLOAD, raw_description=True),
    ]


def _build_arguments(p: argparse.ArgumentParser) -> None:
    project_option(p, help=PROJECT_HELP)


def _workload_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("batch", type=int, help="batch number (1 = the first, fully manual batch)")
    project_option(p)
    p.add_argument("--images", action="store_true",
                   help="also print the diff of every image")
    p.add_argument("--json", action="store_true", help="print the workload as JSON")
    p.add_argument("--write", action="store_true",
                   help="(re)write data/batches/NNN/workload.json")


def cmd_report_build(args: argparse.Namespace, project: CliProject) -> int:
    from flows.project.layout import ProjectLayout
    from flows.accounting.report import build_report, format_table
    out = build_report(ProjectLayout(flow_root(project)))
    print(format_table(out["rows"]))
    print(f"report: {out['html']}")
    return 0


def cmd_report_workload(args: argparse.Namespace, project: CliProject) -> int:
    from tinyloop.annotations import AnnotationError
    from tinyloop.atomic import write_json_atomic
    from tinyloop.params import ParamsError
    layout = project.layout
    try:
        cost = project.params.workload  # the defaults when there is no params.yaml
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        per_batch = [compute(layout, n, cost) for n in range(1, args.batch + 1)
                     if layout.labels(n).exists() or n == args.batch]
    except (AnnotationError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    w = per_batch[-1]
    if args.write:
        write_json_atomic(layout.workload(args.batch), w)
    if args.json:
        print(json.dumps({k: v for k, v in w.items()}, indent=1))
        return 0
    print(format_workload(w, cost, per_batch, show_images=args.images))
    return 0


def compute(layout, n: int, cost) -> dict:
    from flows.accounting.workload import batch_workload
    from tinyloop.annotations import AnnotationError
    from tinyloop.cocofile import read_labels
    if not layout.labels(n).exists():
        raise FileNotFoundError(f"{layout.labels(n)}: batch {n} has no corrected labels yet; "
                                "pull it first (mark it done in the App, or `tinyloop "
                                "resume`)")
    final = read_labels(layout.labels(n))
    pre = read_labels(layout.preannotations(n)) if layout.preannotations(n).exists() \
        else None
    if pre is None and n > 1:
        raise AnnotationError(f"{layout.preannotations(n)} is missing: without the model's "
                              "first pre-annotation there is nothing to diff against")
    refined_path = layout.batch_dir(n) / "refined.json"
    refined = read_labels(refined_path) if refined_path.exists() else None
    w = batch_workload(pre, final, cost, first_batch=(n == 1), refined=refined)
    w["batch"] = n
    return w


def format_workload(w: dict, cost, per_batch: list[dict], show_images: bool) -> str:
    from flows.accounting.workload import cumulative
    lines = [f"batch {w['batch']:03d}: {w['images']} images, {w['objects']} objects"
             + (" (first batch: labeled from scratch)" if w["first_batch"] else "")]
    thresholds = [k for k in w if k.startswith("iou_")]
    head = f"{'':<12}" + "".join(f"{'IoU ' + k[4:]:>10}" for k in thresholds)
    lines += ["", "diff vs first pre-annotation", head]
    for key in ("accepted", "moved", "relabeled", "deleted", "added", "ignored"):
        lines.append(f"{key:<12}" + "".join(f"{w[k]['diff'][key]:>10}" for k in thresholds))
    rounds = ", ".join(f"round {r}: {c}" for r, c in w["clicks_by_round"].items()) or "none"
    lines.append(f"clicks      {w['clicks']} ({rounds})")
    lines += ["", f"workload (T = {cost.box_seconds:g} s per box)", head]
    rows = [("WB boxes", "WB", "{:>10d}"), ("WT s", "WT", "{:>10.1f}"),
            ("seconds", "seconds", "{:>10.1f}"), ("manual s", "manual_seconds", "{:>10.1f}"),
            ("WB saved %", "reduction_WB_pct", "{:>10}"),
            ("WT saved %", "reduction_WT_pct", "{:>10}"),
            ("time saved %", "reduction_seconds_pct", "{:>10}")]
    for label, key, fmt in rows:
        lines.append(f"{label:<12}" + "".join(
            fmt.format(w[k][key]) if w[k][key] is not None else f"{'-':>10}"
            for k in thresholds))
    if len(per_batch) > 1:
        c = cumulative(per_batch)
        lines += ["", f"cumulative, batches 1..{w['batch']} (IoU {cost.iou:g}): "
                      f"WB {c['WB']} of {c['manual_boxes']} boxes "
                      f"({_pct(c['reduction_WB_pct'])} saved), "
                      f"WT {c['WT']:.0f} of {c['manual_seconds']:.0f} s "
                      f"({_pct(c['reduction_WT_pct'])} saved), "
                      f"seconds {c['seconds']:.0f} ({_pct(c['reduction_seconds_pct'])} saved)"]
    if show_images:
        main = w[f"iou_{cost.iou:g}"]["per_image"]
        lines += ["", f"per image (IoU {cost.iou:g})",
                  f"{'image':<28}{'acc':>5}{'mov':>5}{'rel':>5}{'del':>5}{'add':>5}"
                  f"{'clicks':>8}"]
        for d in main:
            clicks = sum(d["clicks_by_round"].values())
            lines.append(f"{d['image_id'][:27]:<28}{d['accepted']:>5}{d['moved']:>5}"
                         f"{d['relabeled']:>5}{d['deleted']:>5}{d['added']:>5}{clicks:>8}")
    return "\n".join(lines)


def _pct(v) -> str:
    return "-" if v is None else f"{v:g} %"
