"""Orderings of the pool: hand-computed farthest-first / similar orders, determinism, temporal
order from HIT-UAV names, batch cutting, bad input, and a pool that grows between runs."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from features import order as order_mod
from features import order_farthest
from features.config import OrderParams
from features.order import (OrderError, cut_batches, farthest_first, order_pool,
                            order_vectors, read_order, temporal_order, two_level)
from tinyloop.annotations import ImageRecord

HITUAV = Path(os.environ.get("TINYLOOP_HITUAV",
                             Path(__file__).resolve().parents[2] / "shared/datasets/hit-uav"))

# 1-D points 0, 1, 3, 7, 8 (rows 0..4). By hand, squared distances:
# dissimilar from row 0: mins to {0} = [-, 1, 9, 49, 64] -> row 4 (8);
#   mins to {0, 8} = [-, 1, 9, 1, -] -> row 2 (3); mins to {0,8,3} = [-, 1, -, 1, -] ->
#   tie, lowest index: row 1, then row 3.  => [0, 4, 2, 1, 3]
# similar from rows 0 and 4: mins = [-, 1, 9, 1, -] -> row 1 (tie with 3, lowest index);
#   mins = [-, -, 4, 1, -] -> row 3; then row 2.  => [0, 4, 1, 3, 2]
LINE = np.array([[0.0], [1.0], [3.0], [7.0], [8.0]], np.float32)


@pytest.fixture(params=["matrix", "per_pick"])
def ff_path(request, monkeypatch):
    """Run each exact test through both code paths (precomputed matrix, one pass per pick)."""
    if request.param == "per_pick":
        monkeypatch.setattr(order_farthest, "MATRIX_BUDGET_BYTES", 0)
    return request.param


def test_dissimilar_reproduces_hand_computed_order(ff_path):
    assert farthest_first(LINE, [0], device="cpu").tolist() == [0, 4, 2, 1, 3]


def test_similar_reproduces_hand_computed_order(ff_path):
    assert farthest_first(LINE, [0, 4], similar=True, device="cpu").tolist() == [0, 4, 1, 3, 2]
    # from one start, nearest-first walks along the line
    assert farthest_first(LINE, [0], similar=True, device="cpu").tolist() == [0, 1, 2, 3, 4]


def test_2d_square_with_centre(ff_path):
    # corners of a 10x10 square plus its centre and a point near corner (0,0)
    pts = np.array([[0, 0], [10, 0], [0, 10], [10, 10], [5, 5], [1, 0]], np.float32)
    # from (0,0): farthest is (10,10); then (10,0) and (0,10) tie at 100 -> row 1; then row 2
    # (min 100); then the centre (min 50) before (1,0) (min 1)
    assert farthest_first(pts, [0], device="cpu").tolist() == [0, 3, 1, 2, 4, 5]


def test_exact_paths_agree_on_random_data(monkeypatch):
    x = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    a = farthest_first(x, [5], device="cpu")
    monkeypatch.setattr(order_farthest, "MATRIX_BUDGET_BYTES", 0)
    b = farthest_first(x, [5], device="cpu")
    assert a.tolist() == b.tolist()
    assert sorted(a.tolist()) == list(range(300))


def test_running_min_matches_bruteforce_definition():
    """Each pick maximises the distance to its nearest already-chosen point."""
    x = np.random.default_rng(1).normal(size=(60, 3)).astype(np.float32)
    order = farthest_first(x, [0], device="cpu")
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    for k in range(1, 20):
        chosen, rest = order[:k], order[k:]
        best = d[np.ix_(rest, chosen)].min(1).max()
        assert d[order[k], chosen].min() == pytest.approx(best, rel=1e-4)


@pytest.mark.parametrize("method", ["dissimilar", "similar", "random"])
def test_deterministic_for_a_seed(method):
    x = np.random.default_rng(2).normal(size=(200, 8)).astype(np.float32)
    p = OrderParams(method=method, seed=7, device="cpu")
    a, b = order_vectors(x, method, p), order_vectors(x, method, p)
    assert a.tolist() == b.tolist()
    c = order_vectors(x, method, OrderParams(method=method, seed=8, device="cpu"))
    assert a.tolist() != c.tolist()


def test_two_level_is_a_deterministic_permutation_and_beats_random():
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(20, 8)) * 10
    x = (centers[rng.integers(20, size=3000)] + rng.normal(size=(3000, 8))).astype(np.float32)
    a = two_level(x, False, 0, 1, 3000, "cpu")
    assert sorted(a.tolist()) == list(range(3000))
    assert a.tolist() == two_level(x, False, 0, 1, 3000, "cpu").tolist()
    radius = lambda sel: np.sqrt(order_mod.nearest_sq(x, x[sel]).max())
    assert radius(a[:40]) < radius(rng.permutation(3000)[:40])
    # order_vectors switches to two-level above exact_max
    p = OrderParams(exact_max=500, device="cpu", pca_dim=4)
    assert sorted(order_vectors(x, "similar", p).tolist()) == list(range(3000))


def test_temporal_order_from_hituav_names():
    names = [
        "0_100_30_0_03306", "0_100_30_0_00012", "1_60_90_0_00500", "0_100_30_0_00100",
        "1_60_90_0_00020"]
    records = [ImageRecord(n, f"images/{n}.jpg", 640, 512) for n in names]
    perm, undated = temporal_order(records)
    assert undated == []
    assert [names[i] for i in perm] == ["0_100_30_0_00012", "0_100_30_0_00100",
                                        "0_100_30_0_03306", "1_60_90_0_00020",
                                        "1_60_90_0_00500"]


@pytest.mark.skipif(not (HITUAV / "images").is_dir(), reason="HIT-UAV not available")
def test_temporal_order_on_real_hituav_files_uses_flight_then_frame():
    files = sorted((HITUAV / "images").rglob("*.jpg"))[:200]
    records = [ImageRecord(f.stem, str(f.relative_to(HITUAV)), 640, 512) for f in files]
    perm, undated = temporal_order(records)
    assert undated == []
    keys = [(r.id.rsplit("_", 1)[0], int(r.id.rsplit("_", 1)[1]))
            for r in (records[i] for i in perm)]
    assert keys == sorted(keys)


def test_temporal_prefers_metadata_and_reports_undated(tmp_path):
    records = [ImageRecord("b", "b.png", 1, 1, metadata={"capture_time": "2024-01-02T00:00"}),
               ImageRecord("a", "a.png", 1, 1, metadata={"capture_time": "2024-01-01T00:00"}),
               ImageRecord("z", "z.png", 1, 1),
               ImageRecord("c", "c.png", 1, 1, metadata={"flight": "f", "frame": 3})]
    res = order_pool(None, [r.id for r in records], OrderParams(method="temporal"),
                     tmp_path / "order.json", records=records)
    ranked = sorted(res.order, key=lambda i: res.order[i]["position"])
    assert ranked[-1] == "z" and ranked.index("a") < ranked.index("b")
    assert any("z" in n for n in res.notes)
    with pytest.raises(OrderError, match="capture_time or frame"):
        order_pool(None, ["z"], OrderParams(method="temporal"), tmp_path / "o2.json",
                   records=[records[2]])


def test_cut_batches():
    assert cut_batches(7, 3, 2).tolist() == [1, 1, 1, 2, 2, 3, 3]
    assert cut_batches(3, 10, 5).tolist() == [1, 1, 1]          # batch larger than the pool
    assert cut_batches(4, 2, 2, first_batch=5).tolist() == [5, 5, 6, 6]


def _pool(n, seed=0, d=6):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), [f"img{i:03d}" for i in range(n)]


def test_order_manifest_written_atomically_and_complete(tmp_path):
    x, ids = _pool(25)
    out = tmp_path / "data" / "order.json"
    res = order_pool(x, ids, OrderParams(first_batch_size=5, batch_size=7, device="cpu"), out)
    on_disk = json.loads(out.read_text())
    assert on_disk == res.order and set(on_disk) == set(ids)
    assert sorted(e["position"] for e in on_disk.values()) == list(range(25))
    sizes = np.bincount([e["batch"] for e in on_disk.values()])[1:].tolist()
    assert sizes == [5, 7, 7, 6]
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_batch_size_larger_than_pool(tmp_path):
    x, ids = _pool(4)
    res = order_pool(x, ids, OrderParams(first_batch_size=10, batch_size=10, device="cpu"),
                     tmp_path / "order.json")
    assert {e["batch"] for e in res.order.values()} == {1}
    assert any("whole pool" in n for n in res.notes)


def test_pool_that_grows_keeps_existing_positions(tmp_path):
    x, ids = _pool(30)
    out = tmp_path / "order.json"
    p = OrderParams(first_batch_size=4, batch_size=5, device="cpu")
    first = order_pool(x[:20], ids[:20], p, out).order
    grown = order_pool(x, ids, p, out)
    for i in ids[:20]:
        assert grown.order[i] == first[i]            # never moved
    new = sorted(ids[20:], key=lambda i: grown.order[i]["position"])
    assert [grown.order[i]["position"] for i in new] == list(range(20, 30))
    last_old_batch = max(e["batch"] for e in first.values())
    assert [grown.order[i]["batch"] for i in new] == [last_old_batch + 1] * 5 + \
        [last_old_batch + 2] * 5
    # the first new image is the one farthest from everything ordered before
    d_old = ((x[20:, None] - x[None, :20]) ** 2).sum(-1).min(1)
    assert new[0] == ids[20 + int(np.argmax(d_old))]
    # re-running with the same pool changes nothing; a vanished image keeps its entry
    again = order_pool(x[1:], ids[1:], p, out)
    assert again.order == grown.order and again.missing == [ids[0]]


@pytest.mark.parametrize("method", ["random", "similar"])
def test_growth_for_other_methods(tmp_path, method):
    x, ids = _pool(12)
    out = tmp_path / "order.json"
    p = OrderParams(method=method, first_batch_size=3, batch_size=3, device="cpu")
    first = order_pool(x[:8], ids[:8], p, out).order
    grown = order_pool(x, ids, p, out).order
    assert all(grown[i] == first[i] for i in ids[:8])
    assert sorted(grown[i]["position"] for i in ids[8:]) == [8, 9, 10, 11]


def test_bad_input(tmp_path):
    out = tmp_path / "order.json"
    p = OrderParams(device="cpu")
    with pytest.raises(OrderError, match="empty"):
        order_pool(np.zeros((0, 4), np.float32), [], p, out)
    x, ids = _pool(3)
    with pytest.raises(OrderError, match="duplicate image ids.*'img000'"):
        order_pool(x, ["img000", "img001", "img000"], p, out)
    bad = x.copy()
    bad[1, 2] = np.nan
    bad[2, 0] = np.inf
    with pytest.raises(OrderError, match=r"2 embeddings contain NaN/inf.*img001"):
        order_pool(bad, ids, p, out)
    with pytest.raises(OrderError, match="shape"):
        order_pool(x[:2], ids, p, out)
    with pytest.raises(OrderError, match="needs embeddings"):
        order_pool(None, ids, p, out)
    assert not out.exists()                  # nothing written on bad input
    out.write_text("{not json")
    with pytest.raises(OrderError, match="dvc checkout"):
        read_order(out)


@pytest.mark.parametrize("head", [0, 30, 400, 1000])
def test_large_pool_keeps_an_exact_head(head):
    """Above exact_max the first exact_head picks equal the exact order; the rest is two-level."""
    x = np.random.default_rng(4).normal(size=(400, 8)).astype(np.float32)
    p = OrderParams(exact_max=100, exact_head=head, starts=1, seed=0, device="cpu")
    exact = order_vectors(x, "dissimilar", OrderParams(exact_max=1000, starts=1, seed=0,
                                                       device="cpu"))
    approx = order_vectors(x, "dissimilar", p)
    assert sorted(approx.tolist()) == list(range(400))
    k = min(head, 400)
    assert approx[:k].tolist() == exact[:k].tolist()
