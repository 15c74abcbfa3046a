"""Per-iteration versioning: dvc add + commit + tag iter-NNN + push, history, restore."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from flows.project.layout import ProjectLayout
from flows.project.init import init_project, set_params
from flows.project.versioning import (VersioningError, commit_iteration, format_history, history,
                              run)


def fake_iteration(lay: ProjectLayout, n: int, labels: str, map50: float) -> None:
    """Batch n's files and model n as the loop would leave them (no dvc.yaml stages)."""
    lay.batch_dir(n).mkdir(parents=True, exist_ok=True)
    lay.labels(n).write_text(labels)
    lay.model_dir(n).mkdir(parents=True, exist_ok=True)
    lay.model(n).write_bytes(b"weights %d" % n)
    lay.metrics(n).write_text(json.dumps({"map50": map50}))
    (lay.models / "current").mkdir(parents=True, exist_ok=True)
    (lay.models / "current" / "metrics.json").write_text(json.dumps({"map50": map50}))
    lay.reports.mkdir(exist_ok=True)
    (lay.reports / "summary.json").write_text(json.dumps(
        {"batches": [{"wt_reduction_cum": 10.0 * n, "wb_reduction_cum": 5.0 * n,
                      "images_cum": 4 * n}]}))


@pytest.fixture
def project(tmp_path):
    (tmp_path / "data").mkdir()
    lay = init_project(tmp_path / "p", source=str(tmp_path / "data"))
    lay.dvc_yaml.write_text("stages: {}\n")  # the stages are the flows' business here
    return lay


def test_iterations_are_tagged_pushed_listed_and_restorable(project):
    lay = project
    fake_iteration(lay, 1, "labels one", 0.1)
    r1 = commit_iteration(lay, 1, [], repro=False)
    assert (r1.tag, r1.created, r1.pushed) == ("iter-001", True, True)
    # idempotent: a re-run after a kill does nothing new
    again = commit_iteration(lay, 1, [], repro=False)
    assert (again.created, again.commit) == (False, r1.commit)

    set_params(lay.params, {"c3det.train.epochs": 5})
    fake_iteration(lay, 2, "labels two", 0.3)
    commit_iteration(lay, 2, [], repro=False)
    # the labels are in DVC (pointer in git), the data in the local remote
    tracked = run(lay, "git", "ls-files").stdout.split()
    assert "data/batches/001.dvc" in tracked and "data/batches/001/labels.json" not in tracked
    assert any((lay.root / ".dvc-remote").rglob("*"))

    rows = history(lay)
    assert [r["tag"] for r in rows] == ["iter-001", "iter-002"]
    assert [r["map50"] for r in rows] == [0.1, 0.3]
    assert rows[1]["params_changed"]["c3det.train.epochs"][1] == 5
    assert rows[0]["params_changed"] == {}
    text = format_history(rows)
    assert "c3det.train.epochs" in text and "20.0%" in text

    # restore iteration 1 from the remote alone: drop workspace copy and cache
    import shutil
    shutil.rmtree(lay.root / ".dvc" / "cache")
    shutil.rmtree(lay.batch_dir(1))
    run(lay, "git", "checkout", "-q", "iter-001")
    run(lay, "dvc", "pull", "-q")
    assert lay.labels(1).read_text() == "labels one"
    assert not lay.batch_dir(2).exists()


def test_a_failed_push_names_the_failure_and_keeps_the_iteration(project):
    lay = project
    (lay.root / "not-a-dir").write_text("x")
    run(lay, "dvc", "remote", "add", "-f", "-d", "storage", str(lay.root / "not-a-dir"))
    fake_iteration(lay, 1, "labels", 0.1)
    with pytest.raises(VersioningError, match="dvc push"):
        commit_iteration(lay, 1, [], repro=False)
    # the iteration itself is versioned even though the push failed; the next run pushes
    assert run(lay, "git", "tag", "-l").stdout.split() == ["iter-001"]


@pytest.mark.prefect
def test_prefect_retries_the_push_push_attempts_times_in_all(tmp_path, monkeypatch,
                                                               prefect_harness):
    import flows.project.versioning
    from prefect import flow
    from flows.loop import push
    from flows.project.init import init_project
    root = init_project(tmp_path / "p", params_overrides={
        "flows.push_attempts": 3, "flows.push_delay_s": 0.01}).root
    calls = []

    def unreachable(layout):
        calls.append(layout.root)
        raise VersioningError("`dvc push` failed: remote unreachable")
    monkeypatch.setattr(flows.project.versioning, "push_to_remote", unreachable)
    with pytest.raises(VersioningError, match="remote unreachable"):
        flow(name="push-test")(push)(str(root))
    assert len(calls) == 3  # one push per attempt: no retry loop nested inside it


def test_init_is_idempotent_and_offline(tmp_path):
    (tmp_path / "data").mkdir()
    lay = init_project(tmp_path / "p", source=str(tmp_path / "data"))
    head = run(lay, "git", "rev-parse", "HEAD").stdout
    init_project(tmp_path / "p")
    assert run(lay, "git", "rev-parse", "HEAD").stdout == head
    cfg = (lay.root / ".dvc" / "config").read_text()
    assert "analytics = false" in cfg and "storage" in cfg
    from flows.project.params import load_params
    assert load_params(lay.params).data.source == str(tmp_path / "data")
    out = subprocess.run([sys.executable, "-m", "dvc", "dag"], cwd=lay.root,
                         capture_output=True, text=True)
    assert "train" in out.stdout and out.returncode == 0
