"""`order.select.strategy: hybrid`: the uncertainty shortlist, then diversity inside it
(the shape of PPAL, Yang et al. 2022): the `shortlist_factor` x batch-size most uncertain
candidates are ranked by k-center greedy against everything labelled, so one batch does not
spend itself on near-copies of the same hard scene; the rest follow by uncertainty.
"""
from __future__ import annotations

import numpy as np

from features.select_diversity import k_center_greedy
from features.select_uncertainty import most_uncertain_first, uncertainty_scores
from features.selection import Ranking, SelectionRequest, Strategy, register


def _select(request: SelectionRequest) -> Ranking:
    scores, reasons = uncertainty_scores(request)
    by_uncertainty = most_uncertain_first(scores)
    size = max(request.count, request.params.shortlist_factor * request.count)
    shortlist, rest = by_uncertainty[:size], by_uncertainty[size:]
    within, distance = k_center_greedy(np.asarray(request.vectors)[shortlist],
                                       request.labeled_vectors)
    order = np.concatenate([shortlist[within], rest])
    for k, (row, d) in enumerate(zip(shortlist[within], distance)):
        reasons[row] = (f"in the {len(shortlist)} most uncertain; diversity pick {k + 1} "
                        f"(distance {d:.3f}): {reasons[row]}")
    for row in rest:
        reasons[row] = f"outside the uncertainty shortlist of {len(shortlist)}: {reasons[row]}"
    return Ranking(order, scores, reasons)


register(Strategy("hybrid", uses_model=True, uses_embeddings=True, select=_select))
