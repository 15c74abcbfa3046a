"""Order the whole pool and cut the order into batches: data/order.json.

Orderings (the active-learning loop paper, section 3.2), all deterministic for `order.seed`,
are registered by name in features/ordering.py, one module each:

- ``dissimilar``  farthest-first (features/order_farthest.py)
- ``similar``     nearest-first, the same running minimum (features/order_farthest.py)
- ``random``      a seeded shuffle (features/order_random.py)
- ``temporal``    capture order (features/order_temporal.py)

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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from features.config import OrderParams
from features.ordering import OrderError, OrderRequest, ordering
# the farthest-first machinery and temporal order, for callers that order vectors directly
from features.order_farthest import (farthest_first, farthest_order, nearest_sq,  # noqa: F401
                                     reduce_dim, two_level)
from features.order_temporal import temporal_key, temporal_order  # noqa: F401
from tinyloop.annotations import ImageRecord
from tinyloop.atomic import write_json_atomic

log = logging.getLogger(__name__)


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



def order_vectors(x: np.ndarray, method: str, params: OrderParams,
                  exact_limit: int | None = None) -> np.ndarray:
    """Permutation of the rows of x (N, D) by the ordering `method` (benchmarks, tests).

    exact_limit overrides the pool size up to which the order is fully exact (benchmarks)."""
    request = OrderRequest(x, [str(i) for i in range(len(x))], np.arange(len(x)), {},
                           params, exact_limit=exact_limit)
    return ordering(method).order(request)


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
    _check_pool(vectors if ordering(params.method).uses_embeddings else None, ids)
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
    method = ordering(params.method)
    if method.uses_embeddings and vectors is None:
        raise OrderError(f"order.method {method.name} needs embeddings; run `tinyloop embed` "
                         "first")
    request = OrderRequest(vectors, ids, new_rows, existing, params, records, result.notes)
    return method.order(request)
