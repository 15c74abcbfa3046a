"""The loop as Prefect flows: `prepare`, `iteration`, `simulate` (and `sweep`,
flows/sweep.py).

    prepare    ingest -> [train SimNet] -> features (fan-out) -> order -> version the pool
               (a params.yaml `data` edit re-imports and rebuilds: flows/project/pool_import.py)
    iteration  pre-annotate batch N with model N-1 (fan-out) -> publish -> wait for people
               -> pull corrections -> workload -> retrain on batches 1..N -> evaluate
               -> select: model N re-ranks the unpublished rest (order.select; fan-out)
               -> pre-annotate batch N+1 -> report -> dvc commit + git tag iter-NNN + push
    simulate   prepare, then every iteration with the simulated annotator instead of people

Every task runs one function of flows/prepare_steps.py or flows/iteration_steps.py on the
project directory, whose files are the loop's state: a flow killed at any point and started
again skips what is finished. Tasks that touch flaky things retry with back-off (pull from
the store, dvc push); training retries a CUDA out-of-memory error with half the batch
(inside iteration_steps.train). Pre-annotation chunks are cached on a content hash of (model
checkpoint, image ids, tiling params), with results persisted under .tinyloop/prefect-results,
so a re-run never predicts twice.

Fan-out: feature extraction and pre-annotation are split into chunks submitted to the flow's
task runner: threads by default, a Dask LocalCluster with `flows.task_runner: dask`
(prefect-dask; run a real `prefect server start`, see scripts/prefect-server).

Progress (tinyloop/progress.py): every step writes `[iter 2/4] train: start` and `... done
in 1m12s` (`[prepare] features: ...` in prepare), the long ones a bar or plain lines, and a
finished batch its workload row at once, on the terminal and as a Prefect artifact
(`workload-batch-NNN`); task runs are named by step and batch (`train-batch-2`).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows import iteration_steps, model_policy, prepare_steps, selection
from flows.faults import fault_point
from flows.runtime import prefect_env  # noqa: F401 - re-exported for callers
from flows.project import batches, pool_split
from flows.project.layout import ProjectLayout, tag_name
from flows.project.project import Project
from tinyloop import progress

PROJECT_STAGES = ["ingest", "features", "order"]
ITERATION_STAGES = ["train", "evaluate", "report"]


def _file_hash(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _chunk_key(context, parameters) -> str:
    """Cache key of a pre-annotation chunk: the model's content, the images, the tiling (a
    chunk holds every scored box: min_score is applied when the batch is written)."""
    model = parameters["model"]
    p = Project.open(parameters["root"])
    parts = [_file_hash(Path(model)) if model else "no-model",
             ",".join(parameters["ids"]), json.dumps(p.params.tiling.__dict__, sort_keys=True),
             p.params.flows.preannotator, "every-scored-box"]
    return "preannotate-" + hashlib.sha256("|".join(parts).encode()).hexdigest()


# --- tasks ------------------------------------------------------------------------------------

@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(root: str, keep_going: bool = False) -> dict:
    """Import the pool (again when params.yaml `data` changed) and print the summary; an
    import with problems fails the flow, naming the report file, unless keep_going."""
    from flows.project.pool_import import PoolError, import_pool
    try:
        result = import_pool(Project.open(root), keep_going)
    except PoolError as e:
        if e.summary:
            print(e.summary)
        raise
    print(result.summary)
    return result.report


@task(name="train-simnet", cache_policy=NO_CACHE)
def train_simnet_task(root: str) -> str:
    """SimNet trained on the pool once, before the embedding fans out (extractor simnet)."""
    return prepare_steps.features_params(Project.open(root), train=True).simnet.checkpoint


@task(name="embed-chunk", task_run_name="embed-chunk-{part}", cache_policy=NO_CACHE)
def embed_chunk_task(root: str, ids: list[str], part: int) -> str:
    """Embed a share of the pool into data/features/parts/NNN (merged afterwards)."""
    from features.embed import embed_pool
    p = Project.open(root)
    pool = pool_split.pool(p)
    keep = set(ids)
    records = [i.image for i in pool if i.id in keep]
    out = p.layout.features / "parts" / f"{part:03d}"
    embed_pool(records, p.source, prepare_steps.features_params(p), out)
    return str(out)


@task(name="merge-features", cache_policy=NO_CACHE)
def merge_features_task(root: str, parts: list[str]) -> dict:
    """The store's still-valid rows plus the parts just embedded, in pool order; images that
    left the pool drop out."""
    import shutil
    import numpy as np
    from features.embed import fingerprint, load_store, save_store
    p = Project.open(root)
    fp = fingerprint(prepare_steps.features_params(p))
    rows: dict[str, np.ndarray] = {}
    for store in [_current_store(p, fp)] + [load_store(part, mmap=False) for part in parts]:
        if store is not None:
            rows.update(zip(store[1], np.asarray(store[0])))
    ids = [i.id for i in pool_split.pool(p) if i.id in rows]
    dim = next(iter(rows.values())).shape[0] if rows else 0
    vectors = np.stack([rows[i] for i in ids]) if ids else np.zeros((0, dim), np.float32)
    save_store(p.layout.features, vectors, ids, fp)
    shutil.rmtree(p.layout.features / "parts", ignore_errors=True)
    return {"images": len(ids)}


def _current_store(p: Project, fp: dict):
    """The embedding store when it was made with these features params, else None."""
    from features.embed import load_store
    store = load_store(p.layout.features, mmap=False)
    return store if store is not None and store[2] == fp else None


@task(name="order", cache_policy=NO_CACHE)
def order_task(root: str) -> dict:
    return prepare_steps.order(Project.open(root))


@task(name="preannotate-chunk", cache_key_fn=_chunk_key, persist_result=True)
def preannotate_chunk_task(root: str, model: str | None, ids: list[str]) -> list:
    p = Project.open(root)
    by_id = {i.id: i for i in pool_split.pool(p)}
    items = iteration_steps.predict_images(p, Path(model) if model else None,
                                           [by_id[i] for i in ids])
    return items


def _score_key(context, parameters) -> str:
    """Cache key of a selection scoring chunk: a pre-annotation chunk's (model content,
    images, tiling), kept apart from it (the results differ in form)."""
    return "select-" + _chunk_key(context, parameters)


@task(name="select-score-chunk", cache_key_fn=_score_key, persist_result=True)
def select_score_chunk_task(root: str, model: str, ids: list[str]) -> list[dict]:
    """Every box model `model` scores on `ids` (pool or held-out images), as plain arrays."""
    from tinyloop.cocofile import read_labels
    p = Project.open(root)
    by_id = read_labels(p.layout.manifest).by_id()
    items = iteration_steps.predict_images(p, Path(model), [by_id[i] for i in ids])
    return [selection.boxes_json(i) for i in items]


@task(name="select", task_run_name="select-after-batch-{n}", cache_policy=NO_CACHE)
def select_task(root: str, n: int, scored: dict | None, held_out: dict | None,
                seconds_scoring: float) -> dict:
    """Rank the rest with model n, write its selection record, re-cut order.json."""
    return selection.select(Project.open(root), n, scored, held_out, seconds_scoring)


@task(name="simulate-annotator", task_run_name="simulate-annotator-batch-{n}",
      cache_policy=NO_CACHE)
def simulate_task(root: str, n: int) -> dict:
    p = Project.open(root)
    return iteration_steps.simulate_annotation(p, iteration_steps.open_store(p), n)


@task(name="publish", task_run_name="publish-batch-{n}", cache_policy=NO_CACHE)
def publish_task(root: str, n: int) -> int:
    p = Project.open(root)
    return len(iteration_steps.publish(p, iteration_steps.open_store(p), n))


@task(name="pull", task_run_name="pull-batch-{n}", retries=3,
      retry_delay_seconds=[1, 4, 16], cache_policy=NO_CACHE)
def pull_task(root: str, n: int) -> int:
    p = Project.open(root)
    return len(iteration_steps.pull(p, iteration_steps.open_store(p), n).images)


@task(name="workload", task_run_name="workload-batch-{n}", cache_policy=NO_CACHE)
def workload_task(root: str, n: int) -> dict:
    return iteration_steps.workload(Project.open(root), n)


@task(name="train", task_run_name="train-batch-{n}", cache_policy=NO_CACHE)
def train_task(root: str, n: int) -> dict:
    return iteration_steps.train(Project.open(root), n)


@task(name="evaluate", task_run_name="evaluate-batch-{n}", cache_policy=NO_CACHE)
def evaluate_task(root: str, n: int) -> dict:
    return iteration_steps.evaluate(Project.open(root), n)


@task(name="report", cache_policy=NO_CACHE)
def report_task(root: str) -> list[dict]:
    from flows.accounting.report import build_report, prefect_artifacts
    layout = ProjectLayout(root)
    out = build_report(layout, title=f"tinyloop: {layout.root.name}")
    try:
        prefect_artifacts(layout, out["rows"])
    except Exception as e:  # noqa: BLE001 - artifacts are a convenience, files are the report
        get_run_logger().warning("Prefect artifacts not written: %s", e)
    return out["rows"]


@task(name="version", task_run_name="version-batch-{n}", retries=2,
      retry_delay_seconds=[2, 8], cache_policy=NO_CACHE)
def version_task(root: str, n: int) -> dict:
    """Commit and tag iteration n (the push is its own task, so a retry pushes only)."""
    from flows.project.versioning import commit_iteration
    p = Project.open(root)
    fault_point("version")
    # a selection re-cut order.json: its new hash is recorded with the iteration
    r = commit_iteration(p.layout, n, ITERATION_STAGES + (["preannotate"] if (
        p.layout.data / "next" / "preannotations.json").exists() else []) + (
        ["order"] if p.layout.selection(n).exists() else []), push=False)
    return {"tag": r.tag, "commit": r.commit, "created": r.created, "seconds": r.seconds}


@task(name="push", cache_policy=NO_CACHE)
def push_task(root: str) -> bool:
    from flows.project.versioning import push_to_remote
    return push_to_remote(Project.open(root).layout)


def push(root: str) -> bool:
    """`dvc push`, retried by Prefect flows.push_attempts times in all, the waits doubling
    from flows.push_delay_s (a remote that is briefly unreachable)."""
    fp = Project.open(root).params.flows
    delays = [fp.push_delay_s * 2 ** i for i in range(fp.push_attempts - 1)]
    return push_task.with_options(retries=fp.push_attempts - 1,
                                  retry_delay_seconds=delays)(root)


# --- fan-out helpers --------------------------------------------------------------------------

def _fan_out_preannotate(root: str, n: int) -> None:
    p = Project.open(root)
    if p.layout.preannotations(n).exists():
        return
    model = model_policy.model_for_batch(p, n)
    ids = batches.batch_ids(p, n)
    futures = [preannotate_chunk_task.submit(root, str(model) if model else None, chunk)
               for chunk in iteration_steps.chunks(ids, p.params.flows.preannotate_chunk)]
    items = [item for f in futures for item in f.result()]
    iteration_steps.write_preannotations(p, n, items)


def _fan_out_select(root: str, n: int) -> dict | None:
    """order.select: model n scores the candidates (chunks fan out, cached on the
    checkpoint's hash), then one task ranks them and re-cuts the batches after the fixed
    ones (flows/selection.py). A record already written is applied again (resume)."""
    p = Project.open(root)
    if not selection.is_selecting(p):
        return None
    if not selection.pending(p, n):
        if not p.layout.selection(n).exists():
            return None  # no batch left to cut
        return select_task(root, n, None, None, 0.0)
    t0 = time.perf_counter()
    plan = selection.plan(p, n)
    if not plan.ids:
        out = select_task(root, n, None, None, 0.0)
        print(f"selection after batch {n}: {out['note']}")
        return out
    scored = _score(root, n, plan.ids) if plan.uses_model else None
    held_out = _score(root, n, selection.calibration_ids(p)) if plan.needs_calibration \
        else None
    out = select_task(root, n, scored, held_out, time.perf_counter() - t0)
    print(f"selection after batch {n} ({out['strategy']}): {out['candidates']} candidates, "
          f"{out['images_scored']} scored in {out['seconds']:.1f} s; batch "
          f"{out['next_batch']} takes {', '.join(out['next_ids'][:5])}"
          f"{' ...' if len(out['next_ids']) > 5 else ''}")
    return out


def _score(root: str, n: int, ids: list[str]) -> dict[str, dict]:
    """Model n's boxes on `ids`, chunks submitted to the task runner."""
    p = Project.open(root)
    model = str(p.layout.model(n))
    futures = [select_score_chunk_task.submit(root, model, chunk)
               for chunk in iteration_steps.chunks(ids, p.params.flows.preannotate_chunk) if chunk]
    return {d["id"]: d for f in futures for d in f.result()}


def _fan_out_features(root: str) -> None:
    """Embed the pool images the store lacks (all of them when the features params changed)
    and drop those that left the pool: incremental, like `tinyloop step features`."""
    from features.embed import fingerprint
    p = Project.open(root)
    ids = [i.id for i in pool_split.pool(p)]
    if _embedded_ids(p, fingerprint(prepare_steps.features_params(p))) == set(ids):
        return
    if p.params.features.extractor == "simnet":
        train_simnet_task(root)
    have = _embedded_ids(p, fingerprint(prepare_steps.features_params(p)))
    todo = [i for i in ids if i not in have]
    k = p.params.flows.dask_workers if p.params.flows.task_runner == "dask" else 1
    size = max(1, -(-len(todo) // k))
    futures = [embed_chunk_task.submit(root, chunk, j)
               for j, chunk in enumerate(iteration_steps.chunks(todo, size)) if chunk]
    merge_features_task(root, [f.result() for f in futures])


def _embedded_ids(p: Project, fp: dict) -> set[str]:
    """Ids the embedding store holds for these features params (a cheap read of ids.json)."""
    try:
        meta = json.loads(p.layout.embedding_ids.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return set(meta.get("ids", [])) if meta.get("fingerprint") == fp and \
        p.layout.embeddings.exists() else set()


def task_runner(root: str):
    """The task runner params ask for: threads, or a Dask LocalCluster of processes."""
    fp = Project.open(root).params.flows
    if fp.task_runner == "dask":
        from prefect_dask import DaskTaskRunner
        return DaskTaskRunner(cluster_kwargs={"n_workers": fp.dask_workers,
                                              "threads_per_worker": 1, "processes": True,
                                              "dashboard_address": None})
    from prefect.task_runners import ThreadPoolTaskRunner
    return ThreadPoolTaskRunner(max_workers=2)


# --- flows ------------------------------------------------------------------------------------

@flow(name="prepare", log_prints=True)
def prepare(root: str = ".", keep_going: bool = False) -> dict:
    """Ingest the raw data, embed and order the pool into batches, version the result.

    A params.yaml `data` edit (or a changed source) re-imports the pool and rebuilds features
    and order; once a batch exists only new images are accepted (appended), any other change
    fails the flow saying what changed. Import problems fail the flow unless keep_going
    (the files named are then left out)."""
    p = Project.open(root)
    with progress.step("ingest", "prepare"):
        summary = ingest_task(root, keep_going)
    with progress.step("features", "prepare"):
        _fan_out_features(root)
    with progress.step("order", "prepare"):
        order = order_task(root)
    # the marker holds the pool record it committed: a re-imported pool is committed again
    from flows.project.pool_import import stamp_digest
    marker, pool_version = p.layout.state / "prepared.done", f"{stamp_digest(p.layout)}\n"
    if p.params.flows.versioning and (
            not marker.exists() or marker.read_text() != pool_version):
        from flows.project.versioning import commit_prepared
        with progress.step("version", "prepare"):
            commit_prepared(p.layout, PROJECT_STAGES,
                            "prepare: pool ingested, embedded, ordered")
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(pool_version)
    progress.say(f"[prepare] pool ready: {summary.get('images')} images, "
                 f"{order['batches']} batches")
    held_out_note = pool_split.held_out_note(p)
    if held_out_note:
        print(f"note: {held_out_note}")
    return {"ingest": summary, **order}


@flow(name="preannotate-batch", log_prints=True)
def preannotate_batch(root: str = ".", batch: int = 1) -> int:
    """Pre-annotate one batch with the model of the batch before (chunks fan out)."""
    _fan_out_preannotate(root, batch)
    return len(batches.batch_ids(Project.open(root), batch))


def iteration_complete(p: Project, n: int) -> bool:
    marker = p.layout.state / f"{tag_name(n)}.done"
    return marker.exists()


def next_batch(p: Project) -> int | None:
    for n in range(1, batches.last_batch(p) + 1):
        if not iteration_complete(p, n):
            return n
    return None


@flow(name="iteration", log_prints=True)
def iteration(root: str = ".", batch: int | None = None, simulated: bool = False,
              detach: bool = False) -> dict:
    """One batch: pre-annotate, annotate (people or simulator), pull, retrain, version."""
    p = Project.open(root)
    n = batch or next_batch(p)
    if n is None:
        print("every batch is done")
        return {"batch": None}
    timings: dict[str, float] = {}
    where = f"iter {n}/{max(n, batches.last_batch(p))}"

    def timed(name, fn, *a):
        t0 = time.perf_counter()
        with progress.step(name.replace("_", " "), where):
            out = fn(*a)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        return out

    timed("preannotate", _fan_out_preannotate, root, n)
    if simulated:
        timed("annotate", simulate_task, root, n)
    elif not batches.is_done(p, n):
        publish_task(root, n)
        if detach:
            print(f"batch {n} published; correct it, then run `tinyloop resume --batch {n}`")
            return {"batch": n, "waiting": True}
        from flows.human_wait import wait_for_batch
        timed("wait", wait_for_batch, p.layout, n, p.params.flows.wait_timeout_s)
    timed("pull", pull_task, root, n)
    w = timed("workload", workload_task, root, n)
    timed("train", train_task, root, n)
    metrics = timed("evaluate", evaluate_task, root, n)
    chosen = timed("select", _fan_out_select, root, n)
    timed("preannotate_next", _fan_out_preannotate_next, root, n)
    rows = timed("report", report_task, root)
    row = next((r for r in rows if r["batch"] == n), {})
    _announce_batch(root, row, where)
    version = {}
    if p.params.flows.versioning:
        version = timed("version", version_task, root, n)
        version["pushed"] = timed("push", push, root)
    from tinyloop.atomic import write_json_atomic
    write_json_atomic(p.layout.state / f"{tag_name(n)}.done",
                      {"batch": n, "timings_s": timings, "version": version,
                       "selection": chosen})
    print(f"batch {n}: WT reduction {row.get('wt_reduction')}% (cumulative "
          f"{row.get('wt_reduction_cum')}%), mAP@.5 {metrics.get('map50')}")
    return {"batch": n, "workload": {k: w.get(k) for k in ("WB", "WT", "seconds")},
            "map50": metrics.get("map50"), "timings_s": timings, "version": version,
            "selection": chosen}


def _fan_out_preannotate_next(root: str, n: int) -> None:
    p = Project.open(root)
    if n + 1 > batches.last_batch(p):
        return
    _fan_out_preannotate(root, n + 1)
    iteration_steps.preannotate_next(p, n)


def _announce_batch(root: str, row: dict, where: str) -> None:
    """A finished batch's workload row, at once: on the terminal (after its step lines) and
    as a Prefect artifact of this flow run."""
    if not row:
        return
    from flows.accounting.report import batch_artifact, format_table
    progress.say(f"[{where}] batch {row['batch']} workload:\n{format_table([row])}")
    try:
        batch_artifact(ProjectLayout(root), row)
    except Exception as e:  # noqa: BLE001 - artifacts are a convenience, files are the report
        get_run_logger().warning("Prefect artifact of batch %s not written: %s",
                                 row.get("batch"), e)


@flow(name="simulate", log_prints=True)
def simulate(root: str = ".", iterations: int | None = None,
             keep_going: bool = False) -> list[dict]:
    """The whole loop with the simulated annotator: prepare, then every batch."""
    p = Project.open(root)
    pool_split.mark_simulated(p)  # before the pool is ordered: see pool_split.pool
    with_runner(prepare, root)(root, keep_going)
    last = batches.last_batch(p) if iterations is None else min(iterations, batches.n_batches(p))
    results = []
    for n in range(1, last + 1):
        if not iteration_complete(p, n):
            results.append(with_runner(iteration, root)(root, n, simulated=True))
    from flows.accounting.report import batch_rows
    return batch_rows(p.layout)


def with_runner(f, root: str):
    """`f` with the task runner that the project's params ask for."""
    return f.with_options(task_runner=task_runner(root))
