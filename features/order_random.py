"""A seeded shuffle (`order.method` random): the paper's baseline; uses no embeddings."""
from __future__ import annotations

import numpy as np

from features.ordering import Ordering, OrderRequest, register


def _shuffle(request: OrderRequest) -> np.ndarray:
    return np.random.default_rng(request.params.seed).permutation(len(request.new_rows))


register(Ordering("random", uses_embeddings=False, order=_shuffle))
