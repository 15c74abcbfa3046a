"""`tinyloop loop init|prepare|iterate|resume|simulate|review|history|sweep|serve|step`: run
the loop (the Prefect flows), review a batch, look back at its versions."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.commands.base import CliProject, Verb, project_option, quiet_option
from flows.runtime import announce_prefect_start


PROJECT_HELP = "project directory made by `tinyloop init` (default: .)"

PREPARE = ("Run the `prepare` flow: import the raw data (data.source), embed every pool image, "
           "order the pool into batches (order.method) and version the result. Prints the "
           "import summary; problems stop it unless --keep-going. After an edit of "
           "params.yaml `data` the pool is imported again and features and order rebuilt; "
           "once a batch exists only new images are accepted (appended to the order): "
           "annotated batches are never rewritten.")
SIMULATE = ("Run `prepare` and then every iteration with a simulated annotator correcting "
            "each batch through the annotation store: the loop end to end without people. "
            "Prints the per-batch workload table and writes reports/index.html. Re-running "
            "after an interruption continues where it stopped.")
ITERATE = ("Pre-annotate the next batch, publish it to the annotation store (flows.store), "
           "pause until the batch is marked done (FiftyOne's 'Mark batch done' or `tinyloop "
           "resume`), then pull, compute the workload, retrain, evaluate, report and version "
           "(tag iter-NNN).")
RESUME = ("Mark the batch done (as the App's 'Mark batch done' does). If an `iterate` run is "
          "paused waiting for it, that run resumes; otherwise (it was detached or killed) the "
          "rest of the iteration runs here. Finished steps are never repeated.")
SERVE = ("Register `retrain` and `check-batches` as Prefect deployments with the cron "
         "schedules of flows.schedules and serve them (runs until interrupted). Point "
         "PREFECT_API_URL at a server started with scripts/prefect-server start to see them "
         "in the UI.")
SWEEP = ("Run `simulate` once per cell of the grid, each in its own project under "
         "PROJECT/sweep/<ordering>-<preannotator>-<features> with the project's params plus "
         "the cell's, and write the loop paper's Table 1 (WT and WB reduction % at IoU 0.5 "
         "and 0.7) to PROJECT/sweep/table1.md and table1.json. Cells resume like any "
         "project; a failing cell (e.g. imagenet without cached weights) is reported and the "
         "sweep goes on. Random and temporal orderings ignore the features: they run once "
         "per pre-annotator.")
REVIEW = """\
Rank the images of a batch by how many box errors they probably still have, from the
annotation process alone (Benenson et al. 2019's quality ranker): clicks in the last round, rounds,
change of the predictions in the last round, distance of clicks to the nearest box shown,
box count, mean score. A random forest is trained on finished batches (simulated batches'
simulation.json, or people's batches: their click history against the corrected labels)
and writes data/batches/NNN/review.json {"order": [...], "predicted_error": {...}}.
Reviewers start at the top of the list. Works on batches edited through the file store."""


def verbs() -> list[Verb]:
    return [
        Verb("loop", "init", cmd_loop_init, _init_arguments, alias="init",
             help="make a directory a tinyloop project (git, DVC, params)",
             description="Create (or repair) a project: git init, dvc init with analytics "
                         "off, a default DVC remote (a local directory unless --remote "
                         "names e.g. s3://bucket/path), params.yaml and dvc.yaml."),
        Verb("loop", "prepare", cmd_loop_prepare, _prepare_arguments, alias="prepare",
             help="ingest, embed and order the pool into batches (Prefect flow)",
             description=PREPARE),
        Verb("loop", "iterate", cmd_loop_iterate, _iterate_arguments, alias="iterate",
             help="run one iteration for people (pauses for the batch)",
             description=ITERATE),
        Verb("loop", "resume", cmd_loop_resume, _resume_arguments, alias="resume",
             help="mark a batch done and continue its iteration", description=RESUME),
        Verb("loop", "simulate", cmd_loop_simulate, _simulate_arguments, alias="simulate",
             help="run the whole loop with the simulated annotator (Prefect flow)",
             description=SIMULATE),
        Verb("loop", "review", cmd_loop_review, _review_arguments, alias="review",
             help="order a batch's images for review, worst first (quality ranker)",
             description=REVIEW, raw_description=True),
        Verb("loop", "history", cmd_loop_history, _project_only, alias="history",
             help="table of versioned iterations (metrics, params diffs)",
             description="One row per git tag iter-NNN: labeled images, mAP@0.5, "
                         "cumulative WT/WB reduction and the params changed since the "
                         "previous iteration. Restore one with "
                         "`git checkout iter-NNN && dvc checkout`."),
        Verb("loop", "sweep", cmd_loop_sweep, _sweep_arguments, alias="sweep",
             help="compare orderings x pre-annotators x features (Table 1)",
             description=SWEEP),
        Verb("loop", "serve", cmd_loop_serve, _project_only, alias="serve",
             help="serve the flows as deployments with cron schedules", description=SERVE),
        Verb("loop", "step", cmd_loop_step, _step_arguments, alias="step",
             help="run one dvc.yaml stage's computation (used by dvc repro)",
             description="Run a stage of dvc.yaml in the current project: the same "
                         "function the Prefect flow runs for it."),
    ]


def _project_only(p: argparse.ArgumentParser) -> None:
    project_option(p, help=PROJECT_HELP)


def _init_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", default=None,
                   help="project directory (default: -C PROJECT, else .)")
    p.add_argument("--source", help="raw dataset directory (sets data.source)")
    p.add_argument("--remote", help="DVC remote URL or directory (default: project.dvc_remote)")


def _prepare_arguments(p: argparse.ArgumentParser) -> None:
    project_option(p, help=PROJECT_HELP)
    add_keep_going(p)
    quiet_option(p)


def _simulate_arguments(p: argparse.ArgumentParser) -> None:
    project_option(p, help=PROJECT_HELP)
    p.add_argument("--iterations", type=int, help="batches to run (default: "
                   "flows.iterations)")
    add_keep_going(p)
    quiet_option(p)


def _iterate_arguments(p: argparse.ArgumentParser) -> None:
    project_option(p, help=PROJECT_HELP)
    p.add_argument("--batch", type=int, help="batch number (default: the next unfinished)")
    p.add_argument("--detach", action="store_true",
                   help="publish the batch and exit instead of waiting (for waits of days); "
                        "`tinyloop resume` continues")
    quiet_option(p)


def _resume_arguments(p: argparse.ArgumentParser) -> None:
    project_option(p, help=PROJECT_HELP)
    p.add_argument("--batch", type=int, help="batch number (default: the next unfinished)")
    p.add_argument("--no-continue", action="store_true",
                   help="only mark done and resume a waiting run; do not run anything here")
    quiet_option(p)


def _review_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("batch", type=int, help="batch number to order")
    project_option(p)
    p.add_argument("--train-on", default=None,
                   help="comma-separated batch numbers to learn from (default: every other "
                        "batch with labels)")
    p.add_argument("--top", type=int, default=20, help="images to print (default: 20)")


def _sweep_arguments(p: argparse.ArgumentParser) -> None:
    project_option(p, help=PROJECT_HELP)
    from features.ordering import ordering_names
    p.add_argument("--orderings", nargs="+", default=["random", "dissimilar"],
                   choices=ordering_names())
    p.add_argument("--preannotators", nargs="+", default=["c3det"],
                   choices=["c3det", "plain"])
    p.add_argument("--features", nargs="+", default=["random-init"],
                   choices=["random-init", "imagenet", "simnet"])


def _step_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=["ingest", "features", "order", "train", "evaluate",
                                    "preannotate", "report"])
    project_option(p, help=PROJECT_HELP)


def add_keep_going(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep-going", action="store_true",
                   help="import the pool even when some files have problems (they are left "
                        "out and listed in data/pool/import_report.json)")


def import_pool_or_explain(root: str, keep_going: bool):
    """The flows' ingest step, run before a flow so the import summary is printed and a
    problem ends the command with its message, not a flow-run traceback. Returns the
    PoolImport, or None after printing why the pool cannot be imported (exit 1)."""
    from flows.project.pool_import import PoolError, import_pool
    from flows.project.project import Project
    from tinyloop.ingest import DatasetError
    from tinyloop.params import ParamsError
    try:
        result = import_pool(Project.open(root), keep_going)
    except PoolError as e:
        if e.summary:
            print(e.summary, flush=True)
        print(f"\nerror: {e}", file=sys.stderr)
        return None
    except (DatasetError, ParamsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return None
    print(result.summary, flush=True)
    return result


def flow_root(project: CliProject) -> str:
    """The project at or above -C (the flows read its params.yaml), with the Prefect
    settings of that project in the environment."""
    from flows.project.init import find_root
    from flows.runtime import prefect_env
    root = str(find_root(project.root))
    prefect_env(root)
    return root


def cmd_loop_init(args: argparse.Namespace, project: CliProject) -> int:
    from flows.project.init import init_project
    directory = args.dir or str(project.root)
    layout = init_project(directory, source=args.source, remote=args.remote)
    print(f"project ready in {layout.root}; next: tinyloop simulate -C {directory}  (or "
          f"prepare + iterate with people)")
    return 0


def cmd_loop_prepare(args: argparse.Namespace, project: CliProject) -> int:
    root = flow_root(project)
    if import_pool_or_explain(root, args.keep_going) is None:
        return 1
    from flows.loop import prepare, with_runner
    announce_prefect_start()
    with_runner(prepare, root)(root, args.keep_going)
    return 0


def cmd_loop_simulate(args: argparse.Namespace, project: CliProject) -> int:
    root = flow_root(project)
    if import_pool_or_explain(root, args.keep_going) is None:
        return 1
    from flows.loop import simulate
    from flows.accounting.report import format_table
    announce_prefect_start()
    rows = simulate(root, args.iterations, args.keep_going)
    print(format_table(rows))
    print(f"report: {Path(root) / 'reports' / 'index.html'}")
    return 0


def cmd_loop_iterate(args: argparse.Namespace, project: CliProject) -> int:
    root = flow_root(project)
    from flows.loop import iteration, with_runner
    announce_prefect_start()
    with_runner(iteration, root)(root, args.batch, simulated=False, detach=args.detach)
    return 0


def cmd_loop_resume(args: argparse.Namespace, project: CliProject) -> int:
    root = flow_root(project)
    from flows.human_wait import signal_done
    from flows.loop import iteration, next_batch, with_runner
    from flows.project.project import Project
    p = Project.open(root)
    n = args.batch or next_batch(p)
    if n is None:
        print("every batch is done")
        return 0
    if signal_done(root, n, note="tinyloop resume"):
        print(f"batch {n} marked done; the waiting `iterate` run continues")
        return 0
    print(f"batch {n} marked done")
    if not args.no_continue:
        announce_prefect_start()
        with_runner(iteration, root)(root, n, simulated=False)
    return 0


def cmd_loop_review(args: argparse.Namespace, project: CliProject) -> int:
    from flows.accounting.ranker import order_batch_for_review
    layout = project.layout
    try:
        train = [int(x) for x in args.train_on.split(",")] if args.train_on else None
    except ValueError:
        print(f"error: --train-on {args.train_on!r}: give batch numbers like 1,2,3",
              file=sys.stderr)
        return 1
    try:
        out = order_batch_for_review(layout, args.batch, train)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 1
    print(f"batch {args.batch:03d}: {len(out['order'])} images ordered by {out['method']} "
          f"(trained on {out['training_images']} images of batches "
          f"{out['trained_on_batches'] or 'none'})")
    print(f"{'rank':>4}  {'image':<30}{'predicted errors':>18}")
    for rank, image_id in enumerate(out["order"][:args.top], start=1):
        print(f"{rank:>4}  {image_id[:29]:<30}{out['predicted_error'][image_id]:>18.2f}")
    print(f"written: {layout.batch_dir(args.batch) / 'review.json'}")
    return 0


def cmd_loop_history(args: argparse.Namespace, project: CliProject) -> int:
    from flows.project.versioning import format_history, history
    from flows.project.layout import ProjectLayout
    print(format_history(history(ProjectLayout(flow_root(project)))))
    return 0


def cmd_loop_serve(args: argparse.Namespace, project: CliProject) -> int:
    from flows.serve import serve
    serve(flow_root(project))
    return 0


def cmd_loop_sweep(args: argparse.Namespace, project: CliProject) -> int:
    root = flow_root(project)
    from flows.sweep import format_table1, sweep
    rows = sweep(root, args.orderings, args.preannotators, args.features)
    print(format_table1(rows))
    print(f"table: {Path(root) / 'sweep' / 'table1.md'}")
    return 0


def cmd_loop_step(args: argparse.Namespace, project: CliProject) -> int:
    from flows import iteration_steps, prepare_steps
    from flows.project import batches
    from flows.project.layout import ProjectLayout
    from flows.project.project import Project
    root = flow_root(project)
    p = Project.open(root)
    last = max(p.layout.labeled_batches(), default=0)
    name = args.name
    if name in ("train", "evaluate", "preannotate") and not last:
        print(f"step {name}: no labeled batch yet", file=sys.stderr)
        return 1
    if name == "ingest":  # dvc repro: a pool accepted with --keep-going stays accepted
        return 0 if import_pool_or_explain(root, keep_going=False) else 1
    elif name == "features":
        prepare_steps.features(p)
    elif name == "order":
        prepare_steps.order(p)
    elif name == "train":  # dvc repro runs this only when deps/params changed: start over
        import shutil
        shutil.rmtree(p.layout.model_dir(last), ignore_errors=True)
        iteration_steps.train(p, last)
    elif name == "evaluate":
        p.layout.metrics(last).unlink(missing_ok=True)
        iteration_steps.evaluate(p, last)
    elif name == "preannotate":  # the stage output only: a batch's own copy is never replaced
        from tinyloop.cocofile import write_labels
        from tinyloop.annotations import LabelSet
        if last < batches.n_batches(p):
            model = p.layout.model(last)
            items = iteration_steps.shown(p, model, iteration_steps.predict_images(
                p, model, batches.batch_records(p, last + 1).images))
            write_labels(LabelSet(p.classes, items, {"batch": last + 1}),
                         p.layout.data / "next" / "preannotations.json")
    elif name == "report":
        from flows.accounting.report import build_report
        build_report(ProjectLayout(root))
    return 0
