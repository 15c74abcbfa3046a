"""The faiss similarity backend for FiftyOne Brain, against a real MongoDB (the wheel's mongod).

Sort-by-similarity, k-nearest and radius queries must agree with brute force on the stored
embeddings, and the index must survive a reload from the database (what the App does).
"""
from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.mongo

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "hit-uav" / "images"


@pytest.fixture(scope="module")
def fo(tmp_path_factory):
    """FiftyOne on a mongod: the one already configured in this session, else our own."""
    if "fiftyone" not in sys.modules and not os.environ.get("FIFTYONE_DATABASE_URI"):
        from flows.annotate.mongo import ensure_mongo, free_port, stop_mongo
        root = tmp_path_factory.mktemp("mongo")
        ensure_mongo(root, port=free_port())
        atexit.register(stop_mongo, root)     # after every module that may share it
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    import fiftyone
    return fiftyone


@pytest.fixture
def dataset(fo):
    files = sorted(SAMPLE.glob("*.jpg"))[:12] or [Path(f"/nonexistent/img{i:02d}.jpg")
                                                   for i in range(12)]
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=str(f)) for f in files])
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(files), 6)).astype(np.float32)
    ids = [f.stem for f in files]
    yield ds, vectors, ids
    ds.delete()


def _brute(vectors, q):
    return np.sqrt(((vectors - q) ** 2).sum(1))


def test_sort_by_similarity_matches_brute_force(dataset):
    from flows.annotate.fiftyone_similarity import FaissSimilarityIndex, index_embeddings
    ds, vectors, ids = dataset
    results = index_embeddings(ds, vectors, ids, brain_key="sim")
    assert isinstance(results, FaissSimilarityIndex) and results.total_index_size == 12
    stem_to_sid = {Path(s.filepath).stem: s.id for s in ds}
    query = stem_to_sid[ids[3]]
    view = ds.sort_by_similarity(query, k=5, brain_key="sim", dist_field="dist")
    got = [Path(s.filepath).stem for s in view]
    want = [ids[i] for i in np.argsort(_brute(vectors, vectors[3]), kind="stable")[:5]]
    assert got == want and got[0] == ids[3]
    dists = view.values("dist")
    np.testing.assert_allclose(dists, np.sort(_brute(vectors, vectors[3]))[:5], atol=1e-4)
    # least similar first
    rev = [Path(s.filepath).stem for s in ds.sort_by_similarity(query, k=3, reverse=True,
                                                                  brain_key="sim")]
    assert rev == [ids[i] for i in np.argsort(-_brute(vectors, vectors[3]))[:3]]


def test_index_survives_reload_and_answers_neighbour_queries(dataset, fo):
    from flows.annotate.fiftyone_similarity import FaissSimilarityIndex, index_embeddings
    ds, vectors, ids = dataset
    index_embeddings(ds, vectors, ids, brain_key="sim")
    fresh = fo.load_dataset(ds.name).load_brain_results("sim")   # as the App loads it
    assert isinstance(fresh, FaissSimilarityIndex)
    assert fresh.config.method == "faiss"
    sids, _, dists = fresh._kneighbors(query=vectors[7], k=3, return_dists=True)
    order = np.argsort(_brute(vectors, vectors[7]))[:3]
    stem = {s.id: Path(s.filepath).stem for s in ds}
    assert [stem[s] for s in sids] == [ids[i] for i in order]
    # radius query: every item within the threshold, and duplicates use it
    thresh = float(np.sort(_brute(vectors, vectors[7]))[2]) + 1e-3
    sids, _ = fresh._radius_neighbors(query=vectors[7], thresh=thresh)
    assert sorted(stem[s] for s in sids) == sorted(ids[i] for i in order)
    # rebuild with one more-similar vector: overwrite replaces the run
    vectors2 = vectors.copy()
    vectors2[0] = vectors[7] + 1e-3
    index_embeddings(ds, vectors2, ids, brain_key="sim")
    first_two = [Path(s.filepath).stem for s in
                 ds.sort_by_similarity([s for s, st in stem.items() if st == ids[7]][0], k=2,
                                       brain_key="sim")]
    assert first_two == [ids[7], ids[0]]


def test_no_matching_ids_is_a_clear_error(dataset):
    from flows.annotate.fiftyone_similarity import index_embeddings
    ds, vectors, _ = dataset
    with pytest.raises(ValueError, match="has an embedding"):
        index_embeddings(ds, vectors, [f"other{i}" for i in range(len(vectors))],
                         brain_key="sim2")
