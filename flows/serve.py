"""`tinyloop serve`: the loop's ML-ops schedules as Prefect deployments.

Two deployments, both served from this process (`prefect.serve`):

- `retrain` (cron `flows.schedules.retrain`, nightly by default): retrain the latest model
  on every labeled batch, evaluate, rebuild the report and version the result;
- `check-batches` (cron `flows.schedules.check_batches`, hourly): if the next batch was
  marked done while no `iterate` run was waiting (a detached or killed run), continue its
  iteration.

Runs started from the UI or `prefect deployment run retrain/...` work the same. Point
PREFECT_API_URL at a real server (scripts/prefect-server start) to see them in the UI;
without one Prefect starts a temporary local server.
"""
from __future__ import annotations

import shutil

from prefect import flow

from flows import iteration_steps
from flows.loop import iteration, iteration_complete, next_batch, report_task, with_runner
from flows.project import batches
from flows.project.project import Project


@flow(name="retrain", log_prints=True)
def retrain(root: str = ".") -> dict:
    """Retrain the model of the last finished batch (e.g. after a params edit): from model
    n-1 with flows.warm_start, else from scratch."""
    p = Project.open(root)
    done = [n for n in p.layout.labeled_batches() if iteration_complete(p, n)]
    if not done:
        print("no finished iteration to retrain")
        return {"batch": None}
    n = done[-1]
    shutil.rmtree(p.layout.model_dir(n), ignore_errors=True)
    iteration_steps.train(p, n)
    metrics = iteration_steps.evaluate(p, n)
    report_task(root)
    if p.params.flows.versioning:
        from flows.project.versioning import git_add_versioned, record_stages, run
        record_stages(p.layout, ["train", "evaluate", "report"])
        git_add_versioned(p.layout)
        if run(p.layout, "git", "diff", "--cached", "--quiet", check=False).returncode:
            run(p.layout, "git", "commit", "-q", "-m", f"retrain: model of batch {n}")
    return {"batch": n, "map50": metrics.get("map50")}


@flow(name="check-batches", log_prints=True)
def check_batches(root: str = ".") -> dict:
    """Continue the next iteration if its batch is marked done."""
    p = Project.open(root)
    n = next_batch(p)
    if n is None or not batches.is_done(p, n):
        print(f"nothing to do (next batch: {n})")
        return {"batch": n, "ran": False}
    return {"batch": n, "ran": True, **with_runner(iteration, root)(root, n)}


def deployments(root: str):
    """The deployments `serve` registers (built separately so tests can inspect them)."""
    sched = Project.open(root).params.flows.schedules
    out = []
    for f, cron in ((retrain, sched.retrain), (check_batches, sched.check_batches)):
        kwargs = {"cron": cron} if cron else {}
        out.append(f.to_deployment(name=f"{f.name}-{_slug(root)}", parameters={"root": root},
                                   **kwargs))
    return out


def _slug(root: str) -> str:
    from pathlib import Path
    return Path(root).name or "project"


def serve(root: str) -> None:
    from prefect import serve as prefect_serve
    prefect_serve(*deployments(root))
