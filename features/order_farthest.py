"""Farthest-first orderings of the embeddings (`order.method` dissimilar and similar).

- ``dissimilar``  farthest-first: start from `starts` seeded random images, then repeatedly
                  append the image whose distance to the chosen list (its nearest chosen image)
                  is largest. A running minimum distance per image is kept, so each pick costs
                  one distance pass (N x D), not all pairs again.
- ``similar``     the same running minimum, but append the image *nearest* to the list.

Large pools (above `order.exact_max` on CPU) get their first `order.exact_head` picks exactly
and the rest by the two-level scheme (`two_level`); `order.pca_dim` reduces D with faiss
PCAMatrix first; see features/order.py's docstring. When the pool grows, new images start
from their distance to everything already ordered.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import numpy as np

from features.ordering import Ordering, OrderRequest, register
from tinyloop.device import has_cuda

MATRIX_BUDGET_BYTES = 512 * 2**20   # precompute all pairs when N^2 float32 fits in this
EXACT_MAX_CUDA = 2_000_000          # exact farthest-first on a GPU up to this many images


def _use_cuda(device: str) -> bool:
    """order.device: "cpu", else CUDA when present ("cuda" on a machine without one falls back
    to the CPU: the order is the same, only slower)."""
    return device != "cpu" and has_cuda()


def farthest_first(x: np.ndarray, starts: Sequence[int], similar: bool = False,
                   init_min: np.ndarray | None = None, device: str = "auto",
                   count: int | None = None) -> np.ndarray:
    """Exact greedy order of the rows of x (N, D) -> permutation (N,), `starts` first.

    dissimilar: next = argmax over unchosen of min_{c chosen} |x - c|^2; similar: argmin.
    `init_min` (N,) squared distances to an already-ordered set (pool growth), else +inf.
    `count` stops after that many picks (the first `count` entries of the full order).
    Ties go to the lowest index. One distance pass per pick.
    """
    n = len(x)
    if n == 0:
        return np.zeros(0, np.int64)
    total = n if count is None else min(count, n)
    if _use_cuda(device) and n > 2048:
        return _farthest_first_torch(x, starts, similar, init_min, total)
    x = np.ascontiguousarray(x, dtype=np.float32)
    mind = np.full(n, np.inf, np.float32) if init_min is None else \
        np.asarray(init_min, np.float32).copy()
    taken_value = np.float32(np.inf if similar else -np.inf)
    pick = np.argmin if similar else np.argmax
    order = np.empty(total, np.int64)
    if n * n * 4 <= MATRIX_BUDGET_BYTES and total * 4 > n:
        dist = pairwise_sq(x)
        def update(c: int) -> None:
            np.minimum(mind, dist[c], out=mind)
            mind[c] = taken_value
            if similar:
                dist[:, c] = np.inf   # keep a chosen image at +inf in later minima
    else:
        sq = np.einsum("ij,ij->i", x, x)
        def update(c: int) -> None:
            d = x @ (-2 * x[c])
            d += sq
            d += float(x[c] @ x[c])
            np.maximum(d, 0, out=d)
            np.minimum(mind, d, out=mind)
            mind[c] = taken_value
            if similar:
                sq[c] = np.inf        # inf distance from now on: never pulled below +inf
    k = 0
    for s in starts[:total]:
        order[k] = s
        k += 1
        update(int(s))
    while k < total:
        c = int(pick(mind))
        order[k] = c
        k += 1
        update(c)
    return order


def _farthest_first_torch(x, starts, similar, init_min, total) -> np.ndarray:
    """The same greedy loop with the distance pass on the GPU."""
    import torch
    dev = torch.device("cuda")
    xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=dev)
    n = len(xt)
    sq = (xt * xt).sum(1)
    mind = torch.full((n,), float("inf"), device=dev) if init_min is None else \
        torch.as_tensor(np.asarray(init_min, np.float32), device=dev).clone()
    taken = float("inf") if similar else float("-inf")
    order = np.empty(total, np.int64)
    k = 0
    def update(c: int) -> None:
        d = (sq - 2 * (xt @ xt[c]) + sq[c]).clamp_min_(0)
        torch.minimum(mind, d, out=mind)
        mind[c] = taken
        if similar:
            sq[c] = float("inf")
    for s in starts[:total]:
        order[k] = s
        k += 1
        update(int(s))
    while k < total:
        c = int((mind.argmin() if similar else mind.argmax()).item())
        order[k] = c
        k += 1
        update(c)
    return order


def pairwise_sq(x: np.ndarray, block: int = 4096) -> np.ndarray:
    """All squared Euclidean distances (N, N) float32, computed in row blocks (BLAS)."""
    sq = np.einsum("ij,ij->i", x, x)
    out = np.empty((len(x), len(x)), np.float32)
    for i in range(0, len(x), block):
        d = x[i:i + block] @ (-2 * x.T)
        d += sq[i:i + block, None]
        d += sq[None, :]
        np.maximum(d, 0, out=d)
        out[i:i + block] = d
    return out


def nearest_sq(queries: np.ndarray, base: np.ndarray) -> np.ndarray:
    """(Q,) squared distance of each query row to its nearest row of base (faiss, exact)."""
    import faiss
    index = faiss.IndexFlatL2(base.shape[1])
    index.add(np.ascontiguousarray(base, np.float32))
    d, _ = index.search(np.ascontiguousarray(queries, np.float32), 1)
    return d[:, 0]


def reduce_dim(x: np.ndarray, pca_dim: int, seed: int = 0, train_max: int = 100_000
               ) -> np.ndarray:
    """faiss PCA to pca_dim (trained on at most train_max seeded rows); no-op if not smaller."""
    if pca_dim <= 0 or pca_dim >= x.shape[1]:
        return np.ascontiguousarray(x, np.float32)
    import faiss
    rng = np.random.default_rng(seed)
    train = x if len(x) <= train_max else x[np.sort(rng.choice(len(x), train_max, False))]
    pca = faiss.PCAMatrix(x.shape[1], pca_dim)
    pca.train(np.ascontiguousarray(train, np.float32))
    out = np.empty((len(x), pca_dim), np.float32)
    for i in range(0, len(x), 65536):
        out[i:i + 65536] = pca.apply(np.ascontiguousarray(x[i:i + 65536], np.float32))
    return out


def two_level(x: np.ndarray, similar: bool, seed: int, starts: int, exact_max: int,
              device: str = "auto") -> np.ndarray:
    """Approximate farthest-first (or nearest-first) for pools too large for the exact loop.

    k-means (faiss) into ceil(sqrt(N)) clusters; the centroids are ordered exactly from
    `starts` random centroids; each cluster's members are ordered exactly from the member
    nearest its centroid (recursing when a cluster exceeds exact_max); dissimilar interleaves the
    clusters round-robin in centroid order (one image per cluster per round), similar concatenates
    them.
    """
    import faiss
    n, d = x.shape
    rng = np.random.default_rng(seed)
    m = max(2, math.ceil(math.sqrt(n)))
    x = np.ascontiguousarray(x, np.float32)
    km = faiss.Kmeans(d, m, niter=10, seed=seed, max_points_per_centroid=64, verbose=False,
                      gpu=bool(_use_cuda(device) and faiss.get_num_gpus() > 0))
    km.train(x)
    _, assign = km.index.search(x, 1)
    assign = assign[:, 0]
    by_cluster = np.argsort(assign, kind="stable")
    bounds = np.searchsorted(assign[by_cluster], np.arange(m + 1))
    members = [by_cluster[bounds[c]:bounds[c + 1]] for c in range(m)]
    live = [c for c in range(m) if len(members[c])]
    cents = km.centroids[live]
    cstarts = rng.choice(len(live), size=min(starts, len(live)), replace=False)
    corder = [live[i] for i in farthest_first(cents, cstarts, similar, device=device)]
    ordered = []
    for c in corder:
        idx = members[c]
        if len(idx) > exact_max:
            sub = two_level(x[idx], similar, int(rng.integers(2**31)), 1, exact_max, device)
        else:  # start at the member nearest the centroid: round one = cluster medoids
            near = np.argmin(((x[idx] - km.centroids[c]) ** 2).sum(1))
            sub = farthest_first(x[idx], [int(near)], similar, device=device)
        ordered.append(idx[sub])
    if similar:
        return np.concatenate(ordered)
    rank_in_cluster = np.concatenate([np.arange(len(o)) for o in ordered])
    cluster_rank = np.concatenate([np.full(len(o), r) for r, o in enumerate(ordered)])
    flat = np.concatenate(ordered)
    return flat[np.lexsort((cluster_rank, rank_in_cluster))]


def farthest_order(x: np.ndarray, similar: bool, params,
                   init_min: np.ndarray | None = None, exact_limit: int | None = None
                   ) -> np.ndarray:
    """Permutation of the rows of x (N, D): farthest-first (nearest-first when `similar`)
    from `params.starts` seeded random rows, or from `init_min` (distances to the rows
    already ordered). exact_limit overrides the pool size up to which the order is fully
    exact (benchmarks)."""
    n = len(x)
    rng = np.random.default_rng(params.seed)
    x = reduce_dim(x, params.pca_dim, params.seed)
    limit = EXACT_MAX_CUDA if _use_cuda(params.device) else params.exact_max
    limit = limit if exact_limit is None else exact_limit
    starts = [] if init_min is not None else \
        rng.choice(n, size=min(params.starts, n), replace=False).tolist()
    if n <= limit:
        return farthest_first(x, starts, similar, init_min, params.device)
    # large pool: the first exact_head picks exactly, the rest by the two-level scheme
    head = farthest_first(x, starts, similar, init_min, params.device,
                          count=params.exact_head) if params.exact_head else \
        np.zeros(0, np.int64)
    rest = np.setdiff1d(np.arange(n), head)
    if len(rest) < 3:  # nothing worth clustering left
        return np.concatenate([head, rest])
    tail = rest[two_level(x[rest], similar, params.seed, params.starts, params.exact_max,
                          params.device)]
    return np.concatenate([head, tail])

def _order_new_rows(request: OrderRequest, similar: bool) -> np.ndarray:
    """The new rows ordered against everything already ordered (pool growth)."""
    ids, new_rows, params = request.ids, request.new_rows, request.params
    x = np.asarray(request.vectors, np.float32)
    old_rows = [r for r, i in enumerate(ids) if i in request.existing] \
        if request.existing else []
    if not old_rows:
        return farthest_order(x[new_rows], similar, params, None, request.exact_limit)
    xr = reduce_dim(x, params.pca_dim, params.seed)
    init_min = nearest_sq(xr[new_rows], xr[old_rows])
    return farthest_order(xr[new_rows], similar, replace(params, pca_dim=0), init_min,
                          request.exact_limit)


register(Ordering("dissimilar", uses_embeddings=True,
                  order=lambda request: _order_new_rows(request, similar=False)))
register(Ordering("similar", uses_embeddings=True,
                  order=lambda request: _order_new_rows(request, similar=True)))
