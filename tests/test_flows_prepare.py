"""The prepare flow with SimNet features: SimNet is trained on the pool once, under the
project (wherever the flow is started from), and the embeddings come from it."""
from __future__ import annotations

import hashlib

import pytest

from tests.fixtures_flows import make_project

pytestmark = pytest.mark.prefect

SIMNET = {"features.extractor": "simnet", "features.simnet.epochs": 1,
          "features.simnet.batch_size": 4, "features.simnet.image_size": 32,
          "features.simnet.embedding_dim": 16, "flows.versioning": False}


def test_prepare_trains_simnet_once_under_the_project_and_embeds_with_it(
        tmp_path, monkeypatch, prefect_harness):
    from features.embed import load_store
    from flows.project import pool_split
    from flows.project.project import Project
    from flows.loop import prepare, with_runner
    root = make_project(tmp_path, 8, **SIMNET)
    monkeypatch.chdir(tmp_path)  # not the project: a relative checkpoint must not land here
    with_runner(prepare, str(root))(str(root))
    ckpt = root / "models" / "simnet.pt"
    assert ckpt.is_file() and not (tmp_path / "models").exists()
    p = Project.open(root)
    vectors, ids, fingerprint = load_store(p.layout.features)
    assert vectors.shape == (len(pool_split.pool(p).images), 16)
    assert fingerprint["weights_sha1"] == hashlib.sha1(ckpt.read_bytes()).hexdigest()
    trained = ckpt.stat().st_mtime_ns
    with_runner(prepare, str(root))(str(root))  # a re-run neither retrains nor re-embeds
    assert ckpt.stat().st_mtime_ns == trained


def test_sweep_runs_a_feature_free_ordering_once_per_preannotator(
        tmp_path, monkeypatch, prefect_harness):
    """Random ordering ignores the embeddings: its SimNet row repeats the random-init run."""
    import json
    import flows.loop
    from flows.project.layout import ProjectLayout
    from flows.sweep import sweep
    base = make_project(tmp_path, 4, **{"flows.versioning": False})
    ran = []

    def fake_simulate(root):  # one finished batch whose WT depends on the cell
        ran.append(ProjectLayout(root).root.name)
        lay = ProjectLayout(root)
        lay.batch_dir(1).mkdir(parents=True, exist_ok=True)
        wt = 35.0 if "dissimilar" in root else 56.0
        entry = {"WT": wt, "WB": 5, "seconds": wt, "manual_seconds": 70.0, "objects": 10}
        lay.workload(1).write_text(json.dumps({"iou_0.5": entry, "iou_0.7": entry}))
    monkeypatch.setattr(flows.loop, "simulate", fake_simulate)
    rows = sweep(str(base), ["random", "dissimilar"], ["c3det"], ["random-init", "simnet"])
    assert ran == ["random-c3det-random-init", "dissimilar-c3det-random-init",
                   "dissimilar-c3det-simnet"]
    assert [(r["features"], r["WT@0.5"], r.get("same_as")) for r in rows] == [
        ("random-init", 20.0, None), ("simnet", 20.0, "random-c3det-random-init"),
        ("random-init", 50.0, None), ("simnet", 50.0, None)]
    assert "repeat the cell that ran" in (base / "sweep" / "table1.md").read_text()
