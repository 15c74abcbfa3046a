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
from flows.layout import ProjectLayout

pytestmark = pytest.mark.prefect

POINTS = ["annotated", "pull", "train", "dvc-commit"]


def digest(root: Path) -> dict[str, str]:
    lay = ProjectLayout(root)
    out = {}
    for n in lay.batch_numbers():
        for f in (lay.labels(n), lay.clicks(n), lay.preannotations(n)):
            if f.exists():
                out[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
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


def test_kill9_at_every_step_gives_the_same_labels(tmp_path):
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
