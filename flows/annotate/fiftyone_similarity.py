"""A faiss similarity backend for FiftyOne Brain, so the App can "sort by similarity" on
tinyloop's own embeddings (data/features/), with no model zoo download.

FiftyOne Brain finds a backend by name in `fiftyone.brain.brain_config.similarity_backends`
({"faiss": {"config_cls": "flows.annotate.fiftyone_similarity.FaissSimilarityConfig"}}); the config
class `XConfig` builds the method `X` in the same module, which creates the index `XIndex`.
Saved runs store these class paths, so every process that loads the run (the App server
included) must be able to import `flows.annotate.fiftyone_similarity`, which holds when tinyloop is
installed in the environment that runs FiftyOne.

The index keeps embeddings in memory like Brain's sklearn backend (which it extends: add /
remove / views / serialization are the same), but answers k-nearest, radius and
sort-by-similarity queries with faiss (IndexFlatL2, exact; IndexFlatIP for metric "cosine").

    from flows.annotate.fiftyone_similarity import index_embeddings
    index_embeddings(dataset, vectors, ids, brain_key="tinyloop_similarity")
    view = dataset.sort_by_similarity(sample_id, brain_key="tinyloop_similarity", k=20)

Like every FiftyOne module of tinyloop, call flows.annotate.mongo.configure_env/ensure_mongo before
this module imports fiftyone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from fiftyone.brain.internal.core.sklearn import (SklearnSimilarity, SklearnSimilarityConfig,
                                                   SklearnSimilarityIndex)

BACKEND = "faiss"
CONFIG_CLS = "flows.annotate.fiftyone_similarity.FaissSimilarityConfig"
DEFAULT_BRAIN_KEY = "tinyloop_similarity"


def register_backend() -> None:
    """Make `backend="faiss"` known to fiftyone.brain in this process."""
    import fiftyone.brain as fob
    fob.brain_config.similarity_backends.setdefault(BACKEND, {"config_cls": CONFIG_CLS})


class FaissSimilarityConfig(SklearnSimilarityConfig):
    """Config of the faiss backend; metric "euclidean" (default) or "cosine"."""

    def __init__(self, metric: str = "euclidean", **kwargs):
        if metric not in ("euclidean", "cosine"):
            raise ValueError(f"faiss backend supports metric euclidean or cosine, not {metric!r}")
        super().__init__(metric=metric, **kwargs)

    @property
    def method(self) -> str:
        return BACKEND


class FaissSimilarity(SklearnSimilarity):
    def initialize(self, samples, brain_key):
        return FaissSimilarityIndex(samples, self.config, brain_key, backend=self)


class FaissSimilarityIndex(SklearnSimilarityIndex):
    """SklearnSimilarityIndex whose neighbour queries run on a faiss flat index."""

    _faiss_cache: tuple | None = None

    # --- the faiss index over the current view ---------------------------------------------
    def _view_vectors(self) -> np.ndarray:
        inds = self._current_inds
        e = self._embeddings if inds is None else self._embeddings[inds]
        return self._prep(e)

    def _prep(self, e: np.ndarray) -> np.ndarray:
        e = np.ascontiguousarray(e, dtype=np.float32)
        if self.config.metric == "cosine":
            e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        return e

    def _index(self):
        import faiss
        inds = self._current_inds
        key = (id(self._embeddings), len(self._embeddings),
               None if inds is None else np.asarray(inds).tobytes())
        if self._faiss_cache is None or self._faiss_cache[0] != key:
            e = self._view_vectors()
            index = faiss.IndexFlatIP(e.shape[1]) if self.config.metric == "cosine" \
                else faiss.IndexFlatL2(e.shape[1])
            index.add(e)
            self._faiss_cache = (key, index)
        return self._faiss_cache[1]

    def _to_dist(self, raw: np.ndarray) -> np.ndarray:
        """faiss scores -> distances: sqrt of squared L2, or 1 - inner product for cosine."""
        if self.config.metric == "cosine":
            return 1.0 - raw
        return np.sqrt(np.maximum(raw, 0))

    def _search(self, query: np.ndarray, k: int | None):
        index = self._index()
        k = index.ntotal if k is None else min(k, index.ntotal)
        raw, inds = index.search(self._prep(query), k)
        return self._to_dist(raw), inds

    # --- Brain's query hooks ---------------------------------------------------------------
    def _kneighbors(self, query=None, k=None, reverse=False, aggregation=None,
                    return_dists=False):
        if aggregation is not None:
            return self._kneighbors_aggregate(query, k, reverse, aggregation, return_dists)
        query, _, full_index, single_query = self._parse_neighbors_query(query)
        if full_index:  # every indexed item's neighbours, itself excluded
            own = self._view_vectors()
            dists, inds = self._search(own, None if k is None else k + 1)
            keep = inds != np.arange(len(own))[:, None]
            inds = [row[m][: (k or len(row))] for row, m in zip(inds, keep)]
            dists = [row[m][: (k or len(row))] for row, m in zip(dists, keep)]
        else:
            dists, inds = self._search(query, k)
            inds, dists = list(inds), list(dists)
        return self._format_output(inds, dists if return_dists else None, full_index,
                                   single_query, return_dists)

    def _radius_neighbors(self, query=None, thresh=None, return_dists=False):
        query, _, full_index, single_query = self._parse_neighbors_query(query)
        own = full_index
        if full_index:
            query = self._view_vectors()
        index = self._index()
        q = self._prep(query)
        radius = (1.0 - thresh) if self.config.metric == "cosine" else thresh ** 2
        lims, raw, found = index.range_search(q, float(radius))
        inds, dists = [], []
        for i in range(len(q)):
            ii, dd = found[lims[i]:lims[i + 1]], self._to_dist(raw[lims[i]:lims[i + 1]])
            if own:
                m = ii != i
                ii, dd = ii[m], dd[m]
            inds.append(ii)
            dists.append(dd)
        return self._format_output(inds, dists if return_dists else None, full_index,
                                   single_query, return_dists)

    def _kneighbors_aggregate(self, query, k, reverse, aggregation, return_dists):
        if aggregation != "mean" or query is None:
            return super()._kneighbors_aggregate(query, k, reverse, aggregation, return_dists)
        query, _, _, _ = self._parse_neighbors_query(query)
        q = np.asarray(query, np.float32).mean(axis=0, keepdims=True)
        # most similar first: faiss top-k; least similar needs every distance anyway
        dists, inds = self._search(q, None if reverse else k)
        dists, inds = dists[0], inds[0]
        if reverse:
            dists, inds = dists[::-1], inds[::-1]
            if k is not None:
                dists, inds = dists[:k], inds[:k]
        sample_ids = list(self.current_sample_ids[inds])
        label_ids = list(self.current_label_ids[inds]) \
            if self.config.patches_field is not None else None
        if return_dists:
            return sample_ids, label_ids, list(dists)
        return sample_ids, label_ids


def index_embeddings(dataset, vectors: np.ndarray, ids: Sequence[str],
                     brain_key: str = DEFAULT_BRAIN_KEY, id_field: str | None = None,
                     metric: str = "euclidean", overwrite: bool = True):
    """Build (or rebuild) the faiss similarity index of `dataset` from tinyloop embeddings.

    `ids` are tinyloop image ids (rows of `vectors`); a sample's tinyloop id is its
    `id_field` value, or its file stem when id_field is None (ingest's id rule). Samples
    without an embedding are left out of the index. Returns the FaissSimilarityIndex.
    """
    import fiftyone.brain as fob
    register_backend()
    if overwrite and brain_key in dataset.list_brain_runs():
        dataset.delete_brain_run(brain_key)
    if id_field is None:
        keys = [Path(p).stem for p in dataset.values("filepath")]
    else:
        keys = [str(v) for v in dataset.values(id_field)]
    sample_ids = dataset.values("id")
    row = {i: r for r, i in enumerate(ids)}
    pairs = [(sid, row[key]) for sid, key in zip(sample_ids, keys) if key in row]
    if not pairs:
        raise ValueError(f"none of the {len(sample_ids)} samples of dataset {dataset.name!r} "
                         "has an embedding; check id_field and run `tinyloop embed`")
    results = fob.compute_similarity(dataset, embeddings=False, backend=BACKEND,
                                     brain_key=brain_key, metric=metric)
    rows = np.array([r for _, r in pairs])
    results.add_to_index(np.asarray(vectors, np.float32)[rows],
                         np.array([s for s, _ in pairs]))
    results.save()
    return results
