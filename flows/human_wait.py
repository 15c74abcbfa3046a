"""Waiting for people: a flow pauses until the annotators mark the batch done.

The batch's `done` marker file is the truth; the Prefect pause is how a waiting flow learns
about it without polling:

- the `iteration` flow publishes the batch, then `wait_for_batch` records its flow run id in
  `.tinyloop/waiting-NNN.json` and calls `pause_flow_run(wait_for_input=BatchDone)`;
- "Mark batch done" in the FiftyOne App (the plugin's operator) or `tinyloop resume` call
  `signal_done(project_root, batch)`: it writes the marker atomically, then resumes the waiting
  run (if any) with a `BatchDone` input, from any process;
- a flow that finds the marker already there does not pause at all.

For waits of days there is no process to keep alive: `tinyloop iterate --detach` publishes
the batch and exits; `tinyloop resume` later marks it done and runs the rest of the
iteration in a new flow run (every finished step is skipped, see flows/steps.py). When the
pause times out (`flows.wait_timeout_s`) the run fails with that advice; nothing is lost.
"""
from __future__ import annotations

import json
import logging

from pydantic import Field
from prefect.input import RunInput

from flows.project.layout import ProjectLayout, batch_name
from tinyloop.atomic import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)


class BatchDone(RunInput):
    """What resumes a paused iteration: the batch the annotators finished."""
    batch: int = Field(description="batch number the annotators finished")
    note: str = Field(default="", description="free text, e.g. who finished it")


class BatchNotDone(RuntimeError):
    pass


def waiting_file(layout: ProjectLayout, n: int):
    return layout.state / f"waiting-{batch_name(n)}.json"


def wait_for_batch(layout: ProjectLayout, n: int, timeout_s: int = 604800) -> BatchDone:
    """Pause the current flow run until batch n is marked done (returns at once if it is)."""
    from prefect.context import get_run_context
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    if layout.done_marker(n).exists():
        return BatchDone(batch=n, note="already marked done")
    run_id = str(get_run_context().flow_run.id)
    write_json_atomic(waiting_file(layout, n), {"flow_run_id": run_id, "batch": n})
    log.info("batch %d published; waiting for 'Mark batch done' or `tinyloop resume`", n)
    while True:
        try:
            answer = pause_flow_run(wait_for_input=BatchDone, timeout=timeout_s,
                                    key=f"batch-{batch_name(n)}")
        except FlowPauseTimeout:
            raise BatchNotDone(
                f"batch {n} was not marked done within {timeout_s} s; nothing is lost: "
                "finish it and run `tinyloop resume`") from None
        if answer.batch == n and layout.done_marker(n).exists():
            waiting_file(layout, n).unlink(missing_ok=True)
            return answer
        log.warning("resumed with %r but batch %d is not marked done; pausing again",
                    answer, n)


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
    try:
        resume_flow_run(run_id, run_input=BatchDone(batch=batch, note=note).model_dump())
    except Exception as e:  # noqa: BLE001 - the run may have ended; the marker is what counts
        log.info("flow run %s could not be resumed (%s); the done marker is written, "
                 "`tinyloop resume` continues the iteration", run_id, e)
        return False
    return True
