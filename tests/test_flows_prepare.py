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
    from flows import steps
    from flows.loop import prepare, with_runner
    root = make_project(tmp_path, 8, **SIMNET)
    monkeypatch.chdir(tmp_path)  # not the project: a relative checkpoint must not land here
    with_runner(prepare, str(root))(str(root))
    ckpt = root / "models" / "simnet.pt"
    assert ckpt.is_file() and not (tmp_path / "models").exists()
    p = steps.Project.open(root)
    vectors, ids, fingerprint = load_store(p.layout.features)
    assert vectors.shape == (len(steps.pool(p).images), 16)
    assert fingerprint["weights_sha1"] == hashlib.sha1(ckpt.read_bytes()).hexdigest()
    trained = ckpt.stat().st_mtime_ns
    with_runner(prepare, str(root))(str(root))  # a re-run neither retrains nor re-embeds
    assert ckpt.stat().st_mtime_ns == trained
