"""Human in the loop: a flow paused for a batch resumes when another process marks it done."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from prefect import flow

from flows.human_wait import signal_done, wait_for_batch, waiting_file
from flows.project.layout import ProjectLayout

pytestmark = pytest.mark.prefect


@flow
def waiter(root: str) -> str:
    return wait_for_batch(ProjectLayout(root), 1, timeout_s=300).note


def test_paused_flow_resumes_from_another_process(tmp_path, prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL
    lay = ProjectLayout(tmp_path)
    lay.batch_dir(1).mkdir(parents=True)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(note=waiter(str(tmp_path))))
    thread.start()
    deadline = time.monotonic() + 120
    while True:  # wait until the run is really paused
        assert time.monotonic() < deadline and thread.is_alive(), "flow never paused"
        if waiting_file(lay, 1).exists():
            import json
            run_id = json.loads(waiting_file(lay, 1).read_text())["flow_run_id"]
            with get_client(sync_client=True) as client:
                if client.read_flow_run(run_id).state.is_paused():
                    break
        time.sleep(0.3)
    assert not lay.done_marker(1).exists()
    code = ("import sys; from flows.human_wait import signal_done; "
            "print(signal_done(sys.argv[1], 1, note='done by a person'))")
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value())
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().endswith("True"), proc.stdout + proc.stderr
    thread.join(120)
    assert result["note"] == "done by a person"
    assert lay.done_marker(1).exists() and not waiting_file(lay, 1).exists()


def test_batch_marked_done_before_the_wait_does_not_pause(tmp_path, prefect_harness):
    lay = ProjectLayout(tmp_path)
    lay.batch_dir(1).mkdir(parents=True)
    assert signal_done(tmp_path, 1) is False  # nobody waiting; the marker is written
    assert waiter(str(tmp_path)) == "already marked done"
    with pytest.raises(FileNotFoundError, match="batch 7 does not exist"):
        signal_done(tmp_path, 7)
