"""A model's score threshold: the score from which its boxes are shown, kept beside its
checkpoint as `threshold.json` ({"min_score": 0.35, ...}).

The loop's evaluate step writes it (flows.min_score auto: the score that would have saved
the most annotation time on the held-out images; flows.model_policy.choose_min_score).
That file is the source of truth, and this module is the only one that reads or writes it:
`min_score_of` says which score applies to a checkpoint (an explicit one wins, else the
file's), and `shown` is the one cut every predictor applies, so pre-annotation, the
simulated annotator and the FiftyOne App show the same boxes. The checkpoint itself is
never rewritten for it (model.pt is training's output, under DVC; the threshold is chosen
after). Nothing here imports torch.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from tinyloop.annotations import Annotation
from tinyloop.atomic import write_json_atomic

THRESHOLD_FILE = "threshold.json"


def threshold_path(checkpoint: str | Path) -> Path:
    """Where the threshold of the checkpoint file `checkpoint` is kept."""
    return Path(checkpoint).parent / THRESHOLD_FILE


def read_threshold(checkpoint: str | Path) -> dict | None:
    """The whole threshold record of `checkpoint` (min_score and how it was chosen), or
    None when none was chosen."""
    path = threshold_path(checkpoint)
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def write_threshold(checkpoint: str | Path, record: dict) -> Path:
    """Keep `record` ({"min_score": ..., ...}) as the threshold of `checkpoint`."""
    if "min_score" not in record:
        raise ValueError("a threshold record needs its min_score")
    return write_json_atomic(threshold_path(checkpoint), record)


def read_min_score(checkpoint: str | Path) -> float | None:
    """The min_score chosen for `checkpoint`, or None when none was chosen."""
    record = read_threshold(checkpoint)
    return None if record is None else float(record["min_score"])


def min_score_of(checkpoint: str | Path, min_score: float | None = None,
                 fallback: float | None = 0.0) -> float | None:
    """The score from which `checkpoint`'s model boxes are shown: `min_score` when given
    (an explicit choice wins), else the one chosen for it, else `fallback`."""
    if min_score is not None:
        return min_score
    chosen = read_min_score(checkpoint)
    return fallback if chosen is None else chosen


def shown(annotations: Sequence[Annotation], min_score: float) -> list[Annotation]:
    """The boxes to show: model boxes scoring at least `min_score`; a box a click made
    (`click_refined`) or one without a score always."""
    return [a for a in annotations if a.provenance.source == "click_refined"
            or a.provenance.score is None or a.provenance.score >= min_score]
