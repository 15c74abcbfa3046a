"""Active selection: the current model (or the embeddings) re-rank the rest of the pool after
each retraining, so the next batch is the one this iteration thinks best (issue #27).

The fixed orderings (features/ordering.py) place every image before any model exists;
a selection strategy re-ranks only the candidates that are still unpublished. Strategies
are registered by name (`order.select.strategy`), one module each, listed in
SELECTION_MODULES:

- ``uncertainty``  features/select_uncertainty.py: box uncertainty + a localisation term,
                   class-balanced, aggregated per image
- ``diversity``    features/select_diversity.py: k-center greedy (core-set) against
                   everything labelled
- ``hybrid``       features/select_hybrid.py: uncertainty shortlist, diversity inside it
- ``work``         features/select_work.py: predicted seconds the model saves per image

A strategy is plain numpy/faiss: `select(request) -> Ranking`. The flow (flows/selection.py)
gathers what the request holds (the model's scored boxes, embeddings, labelled counts) and
writes the files. Nothing here imports numpy at import time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from tinyloop.registry import Registry

# the modules whose import registers strategies, in the order their names are listed
SELECTION_MODULES = ("features.select_uncertainty", "features.select_diversity",
                     "features.select_hybrid", "features.select_work")
FIXED = "fixed"  # no selection: the batches keep order.method's order
STRATEGIES: Registry["Strategy"] = Registry(SELECTION_MODULES)


class SelectError(ValueError):
    """The candidates cannot be ranked as asked; the message says what is missing."""


@dataclass
class ImageBoxes:
    """Every box the model scored on one image (before the score cut shown to people)."""
    boxes: Any                 # (B, 4) float xyxy pixels
    scores: Any                # (B,) float in [0, 1]
    classes: list[str]         # (B,) class names

    @classmethod
    def empty(cls) -> "ImageBoxes":
        import numpy as np
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), [])


@dataclass
class Cost:
    """What a box costs and saves an annotator (the workload params' WT terms)."""
    box_seconds: float = 7.0        # T: drawing a box a model did not give
    removal_fraction: float = 0.5   # deleting a wrong box costs this share of T


@dataclass
class SelectionRequest:
    """The candidates to rank: rows of `ids`, in the pool's current order (ties keep it).

    `boxes` (one ImageBoxes per candidate) for strategies that read the model;
    `vectors` / `labeled_vectors` (embeddings of the candidates / of every labelled image)
    for those that read the embeddings."""
    ids: list[str]
    count: int                              # images the next batch takes
    params: Any                             # features.config.SelectParams
    boxes: list[ImageBoxes] | None = None
    vectors: Any = None                     # (N, D) float32
    labeled_vectors: Any = None             # (L, D) float32
    class_counts: dict[str, int] = field(default_factory=dict)  # labelled boxes per class
    min_score: float = 0.0                  # the score from which boxes are shown
    calibration: Any = None                 # features.select_work.Calibration (work)
    cost: Cost = field(default_factory=Cost)


@dataclass
class Ranking:
    """A strategy's answer: `order` a permutation of the candidate rows, best first;
    `scores` and `reasons` per candidate row (what the project files and the App show)."""
    order: Any                 # (N,) int64
    scores: Any                # (N,) float
    reasons: list[str]


@dataclass(frozen=True)
class Strategy:
    """One selection strategy: `select(request)` -> Ranking. `uses_model`: it needs the
    current model's scored boxes of every candidate (one forward each); `uses_embeddings`:
    it needs data/features."""
    name: str
    uses_model: bool
    uses_embeddings: bool
    select: Callable[[SelectionRequest], Ranking]


register = STRATEGIES.register
strategy_names = STRATEGIES.names


def strategy(name: str) -> Strategy:
    found = STRATEGIES.get(name)
    if found is None:
        raise SelectError(f"unknown order.select.strategy {name!r}; expected {FIXED} or one "
                          f"of {', '.join(strategy_names())}")
    return found


def rank(request: SelectionRequest, name: str) -> Ranking:
    """Rank the request's candidates by strategy `name`, checking what it needs first."""
    chosen = strategy(name)
    if chosen.uses_model and (request.boxes is None or len(request.boxes) != len(request.ids)):
        raise SelectError(f"strategy {name} needs the model's boxes of every candidate")
    if chosen.uses_embeddings and (request.vectors is None
                                   or len(request.vectors) != len(request.ids)):
        raise SelectError(f"strategy {name} needs the embedding of every candidate; run the "
                          "features step (`tinyloop step features`)")
    if not request.ids:
        import numpy as np
        return Ranking(np.zeros(0, np.int64), np.zeros(0), [])
    return chosen.select(request)
