"""A model's score threshold: the score from which its boxes are shown, kept beside its
checkpoint as `threshold.json` ({"min_score": 0.35, ...}).

The loop's evaluate step writes it (flows.min_score auto: the score that would have saved
the most annotation time on the held-out images; flows.model_policy.choose_min_score).
That file is the source of truth: `c3det.checkpoint.load` puts its min_score into the
checkpoint's meta, and `c3det.predict.Predictor` applies it unless given a min_score, so
pre-annotation, the simulated annotator and the FiftyOne App show the same boxes. The
checkpoint itself is never rewritten for it (model.pt is training's output, under DVC; the
threshold is chosen after). Nothing here imports torch.
"""
from __future__ import annotations

import json
from pathlib import Path

THRESHOLD_FILE = "threshold.json"


def threshold_path(checkpoint: str | Path) -> Path:
    """Where the threshold of the checkpoint file `checkpoint` is kept."""
    return Path(checkpoint).parent / THRESHOLD_FILE


def read_min_score(checkpoint: str | Path) -> float | None:
    """The min_score chosen for `checkpoint`, or None when none was chosen."""
    path = threshold_path(checkpoint)
    if not path.exists():
        return None
    return float(json.loads(path.read_text(encoding="utf-8"))["min_score"])
