"""`order.select.strategy: diversity`: k-center greedy (core-set, Sener & Savarese 2018) on
the embeddings: each next image is the candidate farthest from everything labelled so far
and everything picked before it.

Unlike the fixed `dissimilar` order, the distances start from the images actually labelled
(after a re-ordering, the batches taken are not the order's head), and only the candidates
are ranked. The score is the Euclidean distance at the moment of the pick.
"""
from __future__ import annotations

import numpy as np

from features.selection import Ranking, SelectionRequest, Strategy, register


def k_center_greedy(x: np.ndarray, labeled: np.ndarray | None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(order, distance at pick) of every row of x (N, D): greedy farthest from `labeled`
    (L, D) and the rows picked before; without labelled rows the first row starts. Ties go
    to the lowest row (the pool's order)."""
    x = np.ascontiguousarray(x, np.float32)
    n = len(x)
    mind = _nearest_sq(x, labeled) if labeled is not None and len(labeled) else \
        np.full(n, np.inf, np.float64)
    sq = np.einsum("ij,ij->i", x, x).astype(np.float64)
    order, picked_at = np.empty(n, np.int64), np.empty(n, np.float64)
    taken = np.zeros(n, bool)
    for k in range(n):
        c = int(np.argmax(np.where(taken, -np.inf, mind)))
        order[k], picked_at[k], taken[c] = c, mind[c], True
        d = np.maximum(sq - 2.0 * (x @ x[c]).astype(np.float64) + sq[c], 0.0)
        np.minimum(mind, d, out=mind)
    return order, np.sqrt(picked_at)


def _nearest_sq(x: np.ndarray, labeled: np.ndarray) -> np.ndarray:
    """Squared distance of each row of x to its nearest labelled row (faiss, exact)."""
    from features.order_farthest import nearest_sq
    return nearest_sq(x, np.asarray(labeled, np.float32)).astype(np.float64)


def diversity_ranking(x: np.ndarray, labeled: np.ndarray | None) -> Ranking:
    """Ranking of the rows of x by k-center greedy; a row's score is its distance at pick."""
    order, distance = k_center_greedy(x, labeled)
    scores = np.empty(len(x))
    scores[order] = distance
    first = np.isinf(scores)
    reasons = ["first pick: nothing labelled to measure from" if f else
               f"farthest from the labelled and earlier picks: distance {s:.3f}"
               for s, f in zip(scores, first)]
    return Ranking(order, np.where(first, np.nan, scores), reasons)


def _select(request: SelectionRequest) -> Ranking:
    return diversity_ranking(request.vectors, request.labeled_vectors)


register(Strategy("diversity", uses_model=False, uses_embeddings=True, select=_select))
