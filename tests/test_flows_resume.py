"""kill -9 at any step of the loop, run again: the same labels, no correction lost.

A real `tinyloop simulate` subprocess is started with TINYLOOP_FAULT=<point>, which makes it
stop (sleep) at that point after announcing it in a marker file; the test then SIGKILLs it
and starts the next run. The points cover the annotator half-way (batch annotated, not yet
marked done), the pull from the annotation store, training, and the DVC commit between
`dvc commit` and the git commit/tag. The final labels must equal byte for byte those of an
uninterrupted run on an identical project.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures_flows import REPO, cli_env, make_project, tinyloop
from flows.project.layout import ProjectLayout

pytestmark = pytest.mark.prefect

POINTS = ["annotated", "pull", "train", "dvc-commit"]


def canonical(path: Path):
    """A labels/clicks file without what is random by design (annotation uids)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k != "uid"}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return strip(json.loads(path.read_text()))


def digest(root: Path) -> dict[str, str]:
    lay = ProjectLayout(root)
    out = {}
    for n in lay.batch_numbers():
        for f in (lay.labels(n), lay.clicks(n), lay.preannotations(n)):
            if f.exists():
                text = json.dumps(canonical(f), sort_keys=True)
                out[str(f.relative_to(root))] = hashlib.sha256(text.encode()).hexdigest()
    return out


def run_until(root: Path, point: str, marker: Path) -> None:
    """Start `tinyloop simulate`, wait until it reaches `point`, SIGKILL it."""
    marker.unlink(missing_ok=True)
    env = cli_env(TINYLOOP_FAULT=point, TINYLOOP_FAULT_MARKER=str(marker))
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "simulate", "-C", str(root)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 600
    while not marker.exists():
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace")
            raise AssertionError(f"run ended (rc {proc.returncode}) before {point}:\n{out}")
        assert time.monotonic() < deadline, f"never reached {point}"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def boxes(labels: dict) -> list:
    names = {c["id"]: c["name"] for c in labels["categories"]}
    files = {i["id"]: i["tinyloop"]["id"] for i in labels["images"]}
    return sorted((files[a["image_id"]], names[a["category_id"]], tuple(a["bbox"]))
                  for a in labels["annotations"])


def test_kill9_during_pull_then_rerun_keeps_every_correction(tmp_path):
    """The fast variant (default suite): one batch, SIGKILL while pulling the corrections."""
    root = make_project(tmp_path, **{"flows.iterations": 1})
    marker = tmp_path / "reached"
    run_until(root, "pull", marker)
    lay = ProjectLayout(root)
    assert lay.done_marker(1).exists() and not lay.labels(1).exists()
    tinyloop("simulate", "-C", str(root))
    labels = canonical(lay.labels(1))
    truth = canonical(lay.ground_truth)
    ids = {i["tinyloop"]["id"] for i in labels["images"]}
    truth["images"] = [i for i in truth["images"] if i["tinyloop"]["id"] in ids]
    keep = {i["id"] for i in truth["images"]}
    truth["annotations"] = [a for a in truth["annotations"] if a["image_id"] in keep]
    # the simulated annotator corrects to the ground truth: every box is there, once
    assert boxes(labels) == boxes(truth) and len(ids) == 4
    # batch 1 has no model yet: the simulator draws every box and spends no clicks
    clicks = json.loads(lay.clicks(1).read_text())["clicks"]
    assert set(clicks) == ids and not any(clicks.values())
    tags = subprocess.run(["git", "tag", "-l"], cwd=root, capture_output=True,
                          text=True).stdout.split()
    assert tags == ["iter-001"]


@pytest.mark.benchmark
def test_kill9_at_every_step_gives_the_same_labels(tmp_path):
    """Four kills (annotator, pull, training, DVC commit) vs an unbroken run (~8 min)."""
    reference = make_project(tmp_path / "ref")
    tinyloop("simulate", "-C", str(reference))
    want = digest(reference)
    assert any(k.endswith("002/labels.json") for k in want), want

    root = make_project(tmp_path / "killed")
    marker = tmp_path / "reached"
    for point in POINTS:
        run_until(root, point, marker)
        assert marker.read_text() == point
    out = tinyloop("simulate", "-C", str(root)).stdout
    assert digest(root) == want
    assert "WT red." in out
    lay = ProjectLayout(root)
    tags = subprocess.run(["git", "tag", "-l"], cwd=root, capture_output=True,
                          text=True).stdout.split()
    assert tags == ["iter-001", "iter-002"]
    # a batch that was corrected is never re-done: its done marker and labels stayed
    assert json.loads(lay.workload(1).read_text())["first_batch"] is True
    # DVC agrees with the workspace after the interrupted commit
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "-q"], cwd=root,
                            capture_output=True, text=True)
    assert status.returncode == 0, status.stdout + status.stderr
