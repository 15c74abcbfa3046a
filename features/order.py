"""Order the whole pool and cut the order into batches: data/order.json.

Orderings (the active-learning loop paper, section 3.2), all deterministic for `order.seed`:

- ``dissimilar``  farthest-first: start from `starts` seeded random images, then repeatedly
                  append the image whose distance to the chosen list (its nearest chosen image)
                  is largest. A running minimum distance per image is kept, so each pick costs
                  one distance pass (N x D), not all pairs again.
- ``similar``     the same running minimum, but append the image *nearest* to the list.
- ``random``      a seeded shuffle.
- ``temporal``    capture order: ImageRecord.metadata ``capture_time`` (ISO), else ``flight``
                  then ``frame`` (HIT-UAV names ``<night>_<alt>_<angle>_<x>_<frame>`` are
                  parsed when the metadata lacks them); images without either go last, by id,
                  and are reported.

Large pools: exact farthest-first is O(N^2 D) (1M images = 1e12 distance terms). Pools above
`order.exact_max` (on CPU) get their first `order.exact_head` picks exactly (the early
batches, which decide the first models, cost exact_head x N x D) and the rest by a two-level
scheme: faiss k-means into ~sqrt(N) clusters,
farthest-first (or nearest-first) over the centroids, exact ordering inside each cluster
(recursively when a cluster is still too large), then members are interleaved round-robin in
centroid order (dissimilar) or concatenated (similar). `order.pca_dim` reduces D with faiss
PCAMatrix first. docs/benchmarks/features.md measures speed and how close this stays to exact.
On CUDA the exact pass runs on the GPU (torch) and k-means uses faiss-gpu when present.

order.json: {image_id: {"position": int (0-based), "batch": int (1-based)}}; batch 1 holds the
first `first_batch_size` positions, every later batch `batch_size`. Written atomically. When
the pool grows, existing entries never change: new images are ordered among themselves (for
dissimilar/similar against the distance to everything already ordered), get the positions after
the last one and start a new batch after the last batch (a batch already sent to annotators is
never topped up). Entries of images that left the pool are kept and reported.

DVC stages (dvc.yaml is owned by flows/; these are the definitions to use)::

    features:
      cmd: tinyloop embed
      deps: [data/pool/manifest.json, features/]
      params: [features, data.source]
      outs:
        - data/features:
            persist: true        # incremental: a re-run embeds only new images
    order:
      cmd: tinyloop order
      deps: [data/features, data/pool/manifest.json, features/order.py]
      params: [order]
      outs:
        - data/order.json:
            persist: true        # positions already handed out never move
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from features.config import OrderParams
from tinyloop.annotations import ImageRecord
from tinyloop.atomic import write_json_atomic
from tinyloop.hituav import hituav_metadata

log = logging.getLogger(__name__)

MATRIX_BUDGET_BYTES = 512 * 2**20   # precompute all pairs when N^2 float32 fits in this
EXACT_MAX_CUDA = 2_000_000          # exact farthest-first on a GPU up to this many images


class OrderError(ValueError):
    """The pool cannot be ordered as asked; the message names the images and the fix."""


@dataclass
class OrderResult:
    order: dict[str, dict[str, int]]                       # what order.json holds
    added: list[str] = field(default_factory=list)         # ids placed in this run
    missing: list[str] = field(default_factory=list)       # ordered before, not in the pool now
    notes: list[str] = field(default_factory=list)         # reported, not fatal

    def summary(self) -> str:
        batches = max((e["batch"] for e in self.order.values()), default=0)
        lines = [f"{len(self.order)} images in {batches} batches; {len(self.added)} placed now"]
        if self.missing:
            lines.append(f"{len(self.missing)} ordered images are no longer in the pool "
                         f"(kept): {', '.join(self.missing[:5])}")
        return "\n".join(lines + self.notes)


# --- distances ---------------------------------------------------------------------------
def _use_cuda(device: str) -> bool:
    if device == "cpu":
        return False
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


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


# --- orderings ---------------------------------------------------------------------------
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


def order_vectors(x: np.ndarray, method: str, params: OrderParams,
                  init_min: np.ndarray | None = None, exact_limit: int | None = None
                  ) -> np.ndarray:
    """Permutation of the rows of x (N, D) for dissimilar / similar / random.

    exact_limit overrides the pool size up to which the order is fully exact (benchmarks)."""
    n = len(x)
    rng = np.random.default_rng(params.seed)
    if method == "random":
        return rng.permutation(n)
    similar = method == "similar"
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


def temporal_key(record: ImageRecord) -> tuple | None:
    """Sort key from capture_time, else flight + frame (HIT-UAV file names as a fallback)."""
    meta = record.metadata or {}
    if meta.get("capture_time"):
        return (str(meta["capture_time"]), "", -1, record.id)
    frame, flight = meta.get("frame"), meta.get("flight")
    if frame is None:
        name = hituav_metadata(Path(record.path).stem)
        if name:
            frame, flight = name["frame"], name["flight"]
    if frame is None:
        return None
    return ("", str(flight or ""), int(frame), record.id)


def temporal_order(records: Sequence[ImageRecord]) -> tuple[np.ndarray, list[str]]:
    """Permutation by capture order, and the ids that had no time (placed last, by id)."""
    keys = [temporal_key(r) for r in records]
    undated = [r.id for r, k in zip(records, keys) if k is None]
    if records and len(undated) == len(records):
        raise OrderError("temporal order needs capture_time or frame metadata, and no image "
                         f"has either (e.g. {records[0].path}); use order.method dissimilar, "
                         "or import images whose names or EXIF carry the capture time")
    ranked = sorted(range(len(records)),
                    key=lambda i: (keys[i] is None, keys[i] or ("", "", -1, records[i].id)))
    return np.asarray(ranked, np.int64), undated


# --- batches and the manifest ------------------------------------------------------------
def cut_batches(n: int, first_batch_size: int, batch_size: int, first_batch: int = 1
                ) -> np.ndarray:
    """Batch number of each of n consecutive positions; batch `first_batch` holds
    first_batch_size positions, the following ones batch_size each."""
    pos = np.arange(n)
    later = first_batch + 1 + (pos - first_batch_size) // batch_size
    return np.where(pos < first_batch_size, first_batch, later).astype(np.int64)


def read_order(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        ok = isinstance(data, dict) and all(
            isinstance(v, dict) and isinstance(v.get("position"), int)
            and isinstance(v.get("batch"), int) for v in data.values())
    except (OSError, ValueError) as e:
        raise OrderError(f"{path}: cannot be read ({e}); restore it from DVC "
                         "(`dvc checkout`) - deleting it reorders batches already sent out")
    if not ok:
        raise OrderError(f"{path}: not an order manifest ({{id: {{position, batch}}}}); "
                         "restore it from DVC (`dvc checkout`)")
    return data


def _check_pool(vectors: np.ndarray | None, ids: Sequence[str]) -> None:
    if len(ids) == 0:
        raise OrderError("the pool is empty: nothing to order; run `tinyloop embed` on an "
                         "imported pool first")
    seen, dups = set(), []
    for i in ids:
        if i in seen:
            dups.append(i)
        seen.add(i)
    if dups:
        raise OrderError(f"duplicate image ids: {', '.join(map(repr, dups[:5]))}; every image "
                         "needs a unique id")
    if vectors is not None:
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise OrderError(f"embeddings have shape {vectors.shape} but there are {len(ids)} "
                             "ids; re-run `tinyloop embed`")
        bad = [ids[i] for i in np.flatnonzero(~np.isfinite(vectors).all(axis=1))]
        if bad:
            raise OrderError(f"{len(bad)} embeddings contain NaN/inf (e.g. {bad[:5]}); "
                             "re-run `tinyloop embed` (it skips such images) or remove them")


def order_pool(vectors: np.ndarray | None, ids: Sequence[str], params: OrderParams,
               out_path: str | os.PathLike, records: Iterable[ImageRecord] | None = None
               ) -> OrderResult:
    """Order the pool (new images only, when out_path already holds an order) and write
    out_path atomically. `records` (with metadata) are needed for method temporal."""
    ids = list(ids)
    if params.method != "temporal" or vectors is not None:
        _check_pool(vectors if params.method in ("dissimilar", "similar") else None, ids)
    else:
        _check_pool(None, ids)
    existing = read_order(out_path)
    result = OrderResult(order=dict(existing))
    result.missing = sorted(set(existing) - set(ids))
    new_rows = np.asarray([r for r, i in enumerate(ids) if i not in existing], np.int64)
    if len(new_rows) == 0:
        result.notes.append("no new images: the order is unchanged")
        write_json_atomic(out_path, result.order)
        return result
    perm = _order_rows(vectors, ids, new_rows, existing, params, records, result)
    placed = new_rows[perm]
    if existing:
        start = max(e["position"] for e in existing.values()) + 1
        next_batch = max(e["batch"] for e in existing.values()) + 1
        batches = cut_batches(len(placed), params.batch_size, params.batch_size, next_batch)
    else:
        start = 0
        batches = cut_batches(len(placed), params.first_batch_size, params.batch_size)
        if params.first_batch_size >= len(placed):
            result.notes.append(f"first_batch_size {params.first_batch_size} >= pool size "
                                f"{len(placed)}: batch 1 holds the whole pool")
    for k, (row, batch) in enumerate(zip(placed.tolist(), batches.tolist())):
        result.order[ids[row]] = {"position": start + k, "batch": batch}
        result.added.append(ids[row])
    write_json_atomic(out_path, result.order)
    return result


def _order_rows(vectors, ids, new_rows, existing, params, records, result) -> np.ndarray:
    """Permutation of new_rows (indices into ids) for the configured method."""
    method = params.method
    if method == "temporal":
        by_id = {r.id: r for r in (records or [])}
        lacking = [ids[r] for r in new_rows if ids[r] not in by_id]
        if lacking:
            raise OrderError(f"temporal order: no image record for {lacking[:5]}; pass the "
                             "pool manifest (data/pool/manifest.json)")
        perm, undated = temporal_order([by_id[ids[r]] for r in new_rows])
        if undated:
            result.notes.append(f"{len(undated)} images have no capture time or frame and "
                                f"were placed last, by id: {', '.join(undated[:5])}")
        return perm
    if method in ("dissimilar", "similar") and vectors is None:
        raise OrderError(f"order.method {method} needs embeddings; run `tinyloop embed` first")
    x = np.asarray(vectors, np.float32) if vectors is not None else np.zeros((len(ids), 1))
    init_min = None
    if existing and method in ("dissimilar", "similar"):
        old_rows = [r for r, i in enumerate(ids) if i in existing]
        if old_rows:
            xr = reduce_dim(x, params.pca_dim, params.seed)
            init_min = nearest_sq(xr[new_rows], xr[old_rows])
            params = _replace(params, pca_dim=0)
            return order_vectors(xr[new_rows], method, params, init_min)
    return order_vectors(x[new_rows], method, params, init_min)


def _replace(params: OrderParams, **changes) -> OrderParams:
    from dataclasses import replace
    return replace(params, **changes)
