"""The prepare steps on a project directory: import the pool, embed it, order it into batches.

Each is idempotent (a finished step returns its output) and resumable: features skips the
images already embedded, and order never moves an existing position. The `tinyloop step
NAME` commands in dvc.yaml and the Prefect prepare flow call these same functions.
"""
from __future__ import annotations

import logging

from flows.project.batches import n_batches, read_order
from flows.project.project import Project
from flows.project.pool_split import pool

log = logging.getLogger(__name__)


def ingest(p: Project, keep_going: bool = False) -> dict:
    """Import the raw dataset: manifest.json (images), ground_truth.json, import_report.json.

    Imports again whenever params.yaml `data` or the source changed since: features and
    order are rebuilt before annotation starts; after, only new images are accepted
    (appended) and any other change is refused (flows/project/pool_import.py). Problems stop the
    import unless keep_going. Returns import_report.json."""
    from flows.project.pool_import import import_pool
    return import_pool(p, keep_going).report


def features_params(p: Project, *, train: bool = False):
    """The features params with SimNet's checkpoint under the project root; `train`: train
    SimNet on the pool first when extractor is simnet and it has no checkpoint yet."""
    from features.simnet import ensure_simnet, with_checkpoint_under
    fp = with_checkpoint_under(p.params.features, p.layout.root)
    if train:
        ensure_simnet(fp, p.layout.root, lambda: [p.source / i.image.path for i in pool(p)])
    return fp


def features(p: Project) -> dict:
    """Embed every pool image (incremental: images already embedded are skipped)."""
    from features.embed import embed_pool
    emb, ids = embed_pool(pool(p), p.source, features_params(p, train=True), p.layout.features)
    return {"images": len(ids), "dim": int(emb.shape[1]) if len(ids) else 0}


def order(p: Project) -> dict:
    """Order the pool into batches (existing positions never move)."""
    import numpy as np
    from features.embed import load_store
    from features.order import order_pool
    records = pool(p)
    store = load_store(p.layout.features, mmap=False)
    if store is None:
        raise FileNotFoundError(f"{p.layout.features} holds no embeddings; run the "
                                "features step first")
    vectors, ids, _ = store
    by_id = dict(zip(ids, range(len(ids))))
    keep = [i.id for i in records if i.id in by_id]
    vectors = np.asarray(vectors)[[by_id[i] for i in keep]]
    _drop_order_of_images_that_left(p, set(keep))
    order_pool(vectors, keep, p.params.order, p.layout.order,
               records=[i.image for i in records])
    return {"batches": n_batches(p)}


def _drop_order_of_images_that_left(p: Project, pool_ids: set[str]) -> None:
    """Ordered images no longer in the pool (now held out by flows.eval_split /
    eval_fraction, or unlabeled in a simulated project): before any batch exists the order
    is rebuilt; after, they might be annotated and evaluated on both, so stop and say so."""
    if not p.layout.order.exists():
        return
    left = sorted(set(read_order(p)) - pool_ids)
    if not left:
        return
    if p.layout.batch_numbers():
        raise RuntimeError(
            f"{len(left)} ordered image(s) are no longer in the pool ({', '.join(left[:3])}"
            f"{' ...' if len(left) > 3 else ''}): a params.yaml change (flows.eval_split, "
            "flows.eval_fraction) moved them to the held-out images after batches were "
            f"annotated from {p.layout.order}. Revert that change, or start a new project "
            "with it (`tinyloop init NEWDIR`)")
    log.warning("%d ordered image(s) left the pool; no batch exists yet: ordering again",
                len(left))
    p.layout.order.unlink()
