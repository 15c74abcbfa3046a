"""Waiting for people: a flow pauses until the annotators mark the batch done.

The batch's `done` marker file is the truth; the Prefect pause is how a waiting flow learns
about it without polling:

- the `iteration` flow publishes the batch, then `wait_for_batch` records its flow run id in
  `.tinyloop/waiting-NNN.json` and calls `pause_flow_run(wait_for_input=BatchDone)`;
- "Mark batch done" in the FiftyOne App (the plugin's operator) or `tinyloop resume` call
  `signal_done(project_root, batch)` (flows/project/done_signal.py): it writes the marker
  atomically, then resumes the waiting run (if any) with a `BatchDone` input, from any
  process;
- a flow that finds the marker already there does not pause at all.

For waits of days there is no process to keep alive: `tinyloop iterate --detach` publishes
the batch and exits; `tinyloop resume` later marks it done and runs the rest of the
iteration in a new flow run (every finished step is skipped, see flows/iteration_steps.py). When the
pause times out (`flows.wait_timeout_s`) the run fails with that advice; nothing is lost.
"""
from __future__ import annotations

import logging

from pydantic import Field
from prefect.input import RunInput

from flows.project.done_signal import signal_done, waiting_file  # noqa: F401 - the pair
from flows.project.layout import ProjectLayout, batch_name
from tinyloop.atomic import write_json_atomic

log = logging.getLogger(__name__)


class BatchDone(RunInput):
    """What resumes a paused iteration: the batch the annotators finished."""
    batch: int = Field(description="batch number the annotators finished")
    note: str = Field(default="", description="free text, e.g. who finished it")


class BatchNotDone(RuntimeError):
    pass


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
