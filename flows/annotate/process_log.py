"""The click/prediction process of one image, as the quality ranker (accounting/ranker.py)
sees it.

An `ImageLog` holds, per click round, how many clicks were made, what the model showed
before and after them and how far the clicks were from the boxes shown. Two producers build
it through `log_from_history`, so the ranker gets the same features from either:

- the simulated annotator (`flows.accounting.simulator.simulate_image`), which also fills the
  ground-truth fields (`remaining_error`, ...);
- a FileStore batch that people corrected (`FileStore.process_log`), from the clicks and
  model outputs the store recorded.

This module depends on neither producer: the annotation store and the simulator both import
it, and neither imports the other for it.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tinyloop.annotations import Annotation, Click
from tinyloop.atomic import write_json_atomic
from tinyloop.boxes import iou_matrix


@dataclass
class RoundLog:
    round: int
    clicks: int                 # clicks made in this round
    boxes: int                  # model boxes after the round's re-prediction
    mean_score: float           # their mean score (0 when none or unscored)
    change: float               # 1 - mean best IoU between the boxes before and after
    click_dist_mean: float      # px from each click to the nearest box shown before it
    click_dist_max: float
    errors_seen: int            # errors the annotator saw at the start of the round


@dataclass
class ImageLog:
    image_id: str
    rounds: list[RoundLog] = field(default_factory=list)
    gt_objects: int = 0
    remaining_error: int = 0    # edits still needed after the last round (ground truth side)
    start_error: int = 0        # edits needed on the first pre-annotation
    start_boxes: int = 0        # model boxes shown before any click
    start_mean_score: float = 0.0
    unpaid: bool = False        # a round's clicks saved less time than they cost
    click_balance_s: float = 0.0  # seconds the clicks saved minus what they cost (all rounds)


def distance_to_boxes(x: float, y: float, boxes: list[Annotation], diagonal: float) -> float:
    """Distance from a point to the nearest box (0 inside one); the image diagonal if none."""
    best = diagonal
    for b in boxes:
        dx = max(b.box.x1 - x, 0.0, x - b.box.x2)
        dy = max(b.box.y1 - y, 0.0, y - b.box.y2)
        best = min(best, math.hypot(dx, dy))
    return best


def prediction_change(before: list[Annotation], after: list[Annotation]) -> float:
    """1 - mean over all boxes (both sides) of their best IoU on the other side."""
    if not before and not after:
        return 0.0
    ious = iou_matrix([a.box.xyxy() for a in before], [b.box.xyxy() for b in after])
    best = np.concatenate([ious.max(axis=1, initial=0.0), ious.max(axis=0, initial=0.0)])
    return 1.0 - float(np.mean(best))


def mean_score(boxes: list[Annotation]) -> float:
    scores = [a.score for a in boxes if a.score is not None]
    return float(np.mean(scores)) if scores else 0.0


def log_from_history(image_id: str, width: int, height: int, clicks: list[Click],
                     history: list[tuple[int, list[Annotation]]]) -> ImageLog:
    """The process log of one image from its clicks and the model outputs it showed.

    `history`: (round, model boxes) in time order, round 0 = the first pre-annotation; an
    output made after round r's clicks carries r. The simulator and a FileStore batch
    corrected by people (`FileStore.process_log`) both go through here, so the ranker sees
    the same features either way. Ground-truth fields stay 0.
    """
    diagonal = math.hypot(width, height)
    first = history[0][1] if history else []
    log = ImageLog(image_id, start_boxes=len(first), start_mean_score=mean_score(first))
    for r in sorted({c.round for c in clicks}):
        new = [c for c in clicks if c.round == r]
        shown = ([boxes for rr, boxes in history if rr < r] or [first])[-1]
        after = ([boxes for rr, boxes in history if rr == r] or [shown])[-1]
        dists = [distance_to_boxes(c.x, c.y, shown, diagonal) for c in new]
        log.rounds.append(RoundLog(r, len(new), len(after), mean_score(after),
                                   prediction_change(shown, after), float(np.mean(dists)),
                                   float(np.max(dists)), 0))
    return log


def save_logs(logs: list[ImageLog], path: str | Path) -> Path:
    return write_json_atomic(path, [asdict(log) for log in logs])


def load_logs(path: str | Path) -> list[ImageLog]:
    out = []
    for d in json.loads(Path(path).read_text(encoding="utf-8")):
        rounds = [RoundLog(**r) for r in d.pop("rounds")]
        out.append(ImageLog(rounds=rounds, **d))
    return out
