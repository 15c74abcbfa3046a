"""The done signal: the annotators finished a batch.

The batch's `done` marker file is the truth; `signal_done` writes it atomically, then resumes
the Prefect flow run waiting for the batch (flows.human_wait.wait_for_batch wrote its id
into the waiting file). Every store's "mark done" ("Mark batch done" in the FiftyOne App,
`tinyloop resume`, the simulated annotator) ends here, below the stores and the flows, so
neither has to import the other for it. Prefect is imported only when a run waits.
"""
from __future__ import annotations

import json
import logging

from flows.project.layout import ProjectLayout, batch_name
from tinyloop.atomic import write_text_atomic

log = logging.getLogger(__name__)


def waiting_file(layout: ProjectLayout, n: int):
    return layout.state / f"waiting-{batch_name(n)}.json"


def signal_done(project_root, batch: int, note: str = "") -> bool:
    """Mark `batch` done and resume the flow run waiting for it; True if one was resumed.

    Safe to call twice and from any process; the marker is written even when no flow waits.
    """
    layout = ProjectLayout(project_root)
    if not layout.batch_dir(batch).is_dir():
        raise FileNotFoundError(f"batch {batch} does not exist in {layout.batches}; "
                                "check the batch number")
    if not layout.done_marker(batch).exists():
        write_text_atomic(layout.done_marker(batch), "done\n")
    wf = waiting_file(layout, batch)
    if not wf.exists():
        return False
    run_id = json.loads(wf.read_text())["flow_run_id"]
    from prefect.flow_runs import resume_flow_run
    try:  # the run input is flows.human_wait.BatchDone's fields
        resume_flow_run(run_id, run_input={"batch": batch, "note": note})
    except Exception as e:  # noqa: BLE001 - the run may have ended; the marker is what counts
        log.info("flow run %s could not be resumed (%s); the done marker is written, "
                 "`tinyloop resume` continues the iteration", run_id, e)
        return False
    return True
