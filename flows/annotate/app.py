"""Start, stop and inspect the FiftyOne App for a project: mongod + App server, by PID.

`start_app` starts the project's mongod (flows.annotate.mongo), installs tinyloop's plugin into the
project's plugins dir (.tinyloop/fiftyone/plugins), and runs the App server
(`python -m fiftyone.server.main`) bound to 127.0.0.1:5151 by default - loopback only, so
annotators on other machines reach it through an SSH tunnel:

    ssh -N -L 5151:127.0.0.1:5151 user@annotation-host   # then open http://localhost:5151

`stop_app` stops the server it started (and, with `mongo=True`, the mongod) by the PIDs
recorded in .tinyloop/app.json and .tinyloop/mongo/mongod.json; nothing else is touched.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from flows.annotate import mongo
from tinyloop.atomic import write_json_atomic

# the App plugin is an entry point beside the CLI (it calls the model policy), so it lives
# in flows/, above the rooms
PLUGIN_SRC = Path(__file__).resolve().parents[1] / "fiftyone_plugin"
REPO = Path(__file__).resolve().parents[2]  # where `flows`, `c3det`, `tinyloop` import from


class AppError(RuntimeError):
    pass


def _state(root: Path) -> Path:
    return Path(root) / ".tinyloop"


def plugins_dir(root: str | Path) -> Path:
    return _state(Path(root)) / "fiftyone" / "plugins"


def install_plugin(root: str | Path) -> Path:
    """Copy annotate/fiftyone_plugin into the project's plugins dir (replacing an old copy)."""
    dest = plugins_dir(root) / "tinyloop"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(PLUGIN_SRC, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def app_status(root: str | Path) -> dict | None:
    """{"pid", "port", "address", "url", "log"} when this project's App runs, else None."""
    info_file = _state(Path(root)) / "app.json"
    try:
        info = json.loads(info_file.read_text())
    except (OSError, ValueError):
        return None
    if mongo._alive(info["pid"]) and mongo._port_open(info["port"], info["address"]):
        return info
    return None


def start_app(root: str | Path, port: int = 5151, address: str = "127.0.0.1",
              dataset: str | None = None, timeout: float = 180.0,
              uri: str | None = None) -> dict:
    """Start mongod and the App server unless they already run; returns app_status().

    `uri`: use this MongoDB instead of starting the project's own (tests share one)."""
    root = Path(root).resolve()
    info = app_status(root)
    if info is not None:
        return info
    if mongo._port_open(port, address):
        raise AppError(f"{address}:{port} is already in use by another process; pass "
                       "--port (annotate.app_port) or stop what listens there")
    uri = uri or mongo.ensure_mongo(root)
    install_plugin(root)
    env = dict(os.environ)
    env.update({"FIFTYONE_DATABASE_URI": uri, "FIFTYONE_DO_NOT_TRACK": "true",
                "FIFTYONE_DATABASE_VALIDATION": "false",
                "FIFTYONE_PLUGINS_DIR": str(plugins_dir(root)),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                            env.get("PYTHONPATH")]))})
    log = _state(root) / "app.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fiftyone.server.main", "--port",
                                 str(port), "--address", address], cwd=root, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)
    url = f"http://{address}:{port}" + (f"/datasets/{dataset}" if dataset else "")
    info = {"pid": proc.pid, "port": port, "address": address, "url": url, "log": str(log)}
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AppError(f"the App server exited with code {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"http://{address}:{port}/", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            mongo._terminate(proc.pid, 10)
            raise AppError(f"the App did not answer on {address}:{port} within "
                           f"{timeout:.0f} s; see {log}")
        time.sleep(0.5)
    write_json_atomic(_state(root) / "app.json", info)
    return info


def stop_app(root: str | Path, stop_mongo: bool = True) -> list[str]:
    """Stop what start_app started (by recorded PID); returns what was stopped."""
    root = Path(root)
    stopped = []
    info_file = _state(root) / "app.json"
    try:
        info = json.loads(info_file.read_text())
    except (OSError, ValueError):
        info = None
    if info and mongo._terminate(info["pid"], 20):
        stopped.append(f"App server (pid {info['pid']})")
    info_file.unlink(missing_ok=True)
    if stop_mongo:
        m = mongo.running(root)
        if mongo.stop_mongo(root):
            stopped.append(f"mongod (pid {m['pid'] if m else '?'})")
    return stopped
