"""`tinyloop loop review BATCH`: order a corrected batch for review, most likely wrong first."""
from __future__ import annotations

import argparse
import sys

from flows.commands.base import CliProject, Verb, project_option

DESCRIPTION = """\
Rank the images of a batch by how many box errors they probably still have, from the
annotation process alone (Benenson et al. 2019's quality ranker): clicks in the last round, rounds,
change of the predictions in the last round, distance of clicks to the nearest box shown,
box count, mean score. A random forest is trained on finished batches (simulated batches'
simulation.json, or people's batches: their click history against the corrected labels)
and writes data/batches/NNN/review.json {"order": [...], "predicted_error": {...}}.
Reviewers start at the top of the list. Works on batches edited through the file store."""


def verbs() -> list[Verb]:
    return [Verb("loop", "review", cmd_loop_review, _arguments, alias="review",
                 help="order a batch's images for review, worst first (quality ranker)",
                 description=DESCRIPTION, raw_description=True)]


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("batch", type=int, help="batch number to order")
    project_option(p)
    p.add_argument("--train-on", default=None,
                   help="comma-separated batch numbers to learn from (default: every other "
                        "batch with labels)")
    p.add_argument("--top", type=int, default=20, help="images to print (default: 20)")


def cmd_loop_review(args: argparse.Namespace, project: CliProject) -> int:
    from flows.accounting.ranker import order_batch_for_review
    layout = project.layout
    try:
        train = [int(x) for x in args.train_on.split(",")] if args.train_on else None
    except ValueError:
        print(f"error: --train-on {args.train_on!r}: give batch numbers like 1,2,3",
              file=sys.stderr)
        return 1
    try:
        out = order_batch_for_review(layout, args.batch, train)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 1
    print(f"batch {args.batch:03d}: {len(out['order'])} images ordered by {out['method']} "
          f"(trained on {out['training_images']} images of batches "
          f"{out['trained_on_batches'] or 'none'})")
    print(f"{'rank':>4}  {'image':<30}{'predicted errors':>18}")
    for rank, image_id in enumerate(out["order"][:args.top], start=1):
        print(f"{rank:>4}  {image_id[:29]:<30}{out['predicted_error'][image_id]:>18.2f}")
    print(f"written: {layout.batch_dir(args.batch) / 'review.json'}")
    return 0
