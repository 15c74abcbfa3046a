"""Version every iteration with DVC and git: one commit and one tag `iter-NNN` per batch.

What an iteration's version holds (see docs/operations.md): params.yaml, dvc.yaml, dvc.lock
(the hashes of every stage's deps and outs), the `.dvc` pointers of the finished batch
(pre-annotations, clicks, corrected labels, workload) and of models/iter-NNN, and the small
metrics files git keeps itself. The data lives in the DVC cache and the configured remote.

The flow computes each stage itself (so it can retry, cache and fan out); `dvc commit`
then records what was computed in dvc.lock, and a full `dvc repro` checks that the record
is complete: it reruns a stage's command only if something changed behind the flow's back
(for example a params edit). A DVC pipeline cannot loop, so the loop lives in Prefect.

DVC's own lock does not protect calls made from one process, and two DVC commands at once
can corrupt its state: every DVC and git call here goes through `dvc_lock` (an OS file lock
plus a thread lock), so they run one at a time across threads and processes.

Every step is safe to repeat after a kill -9: `dvc add` and `dvc commit` are idempotent, a
git commit is only made when something changed, and a tag that exists is left alone.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from flows.faults import fault_point
from flows.project.layout import ProjectLayout, batch_name, tag_name

log = logging.getLogger(__name__)

_THREAD_LOCK = threading.RLock()
_HELD = threading.local()


class VersioningError(RuntimeError):
    """A git or DVC command failed; the message holds the command and its output."""


# --- running commands one at a time ---------------------------------------------------------

@contextlib.contextmanager
def dvc_lock(layout: ProjectLayout) -> Iterator[None]:
    """Hold the project's DVC/git mutex (re-entrant within a thread)."""
    depth = getattr(_HELD, "depth", 0)
    if depth:
        _HELD.depth = depth + 1
        try:
            yield
        finally:
            _HELD.depth -= 1
        return
    layout.state.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCK, open(layout.dvc_mutex, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        _HELD.depth = 1
        try:
            yield
        finally:
            _HELD.depth = 0
            fcntl.flock(fh, fcntl.LOCK_UN)


def _env() -> dict[str, str]:
    import sys
    env = dict(os.environ)
    # dvc repro runs `tinyloop step ...`: find it beside this interpreter, venv or not
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("GIT_AUTHOR_NAME", "tinyloop")
    env.setdefault("GIT_AUTHOR_EMAIL", "tinyloop@localhost")
    env.setdefault("GIT_COMMITTER_NAME", env["GIT_AUTHOR_NAME"])
    env.setdefault("GIT_COMMITTER_EMAIL", env["GIT_AUTHOR_EMAIL"])
    return env


def _exe(name: str) -> str:
    """`dvc` from the running interpreter's environment when it is there (venv without PATH)."""
    import sys
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def run(layout: ProjectLayout, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run `git ...` or `dvc ...` in the project under the mutex; raise with its output."""
    cmd = [_exe(args[0]), *args[1:]] if args[0] == "dvc" else list(args)
    with dvc_lock(layout):
        proc = subprocess.run(cmd, cwd=layout.root, env=_env(), text=True,
                              capture_output=True)
    if check and proc.returncode != 0:
        raise VersioningError(f"`{' '.join(args)}` failed in {layout.root} "
                              f"(exit {proc.returncode}):\n{proc.stdout}{proc.stderr}".rstrip())
    return proc


# --- one iteration ----------------------------------------------------------------------------

@dataclass
class VersionResult:
    tag: str
    commit: str
    created: bool        # False when the tag already existed (a re-run after a kill)
    pushed: bool
    seconds: float


def tag_exists(layout: ProjectLayout, tag: str) -> bool:
    return run(layout, "git", "rev-parse", "-q", "--verify", f"refs/tags/{tag}",
               check=False).returncode == 0


def has_remote(layout: ProjectLayout) -> bool:
    """A default remote is configured (read from .dvc/config: no DVC process needed)."""
    import configparser
    cfg = configparser.ConfigParser()
    for name in ("config", "config.local"):
        cfg.read(layout.root / ".dvc" / name)
    return bool(cfg.get("core", "remote", fallback="").strip())


def dvc_add(layout: ProjectLayout, paths: list[Path]) -> None:
    """Track data files/directories with DVC (idempotent)."""
    rel = [str(Path(p).resolve().relative_to(layout.root.resolve())) for p in paths
           if Path(p).exists()]
    if rel:
        untrack_from_git(layout, rel)
        run(layout, "dvc", "add", *rel)


def record_stages(layout: ProjectLayout, stages: list[str]) -> None:
    """Write the current hashes of these dvc.yaml stages' deps and outs into dvc.lock."""
    if stages:
        untrack_from_git(layout, stage_outputs(layout))
        run(layout, "dvc", "commit", "-f", *stages)


def stage_outputs(layout: ProjectLayout) -> list[str]:
    """The cached outs of dvc.yaml's stages (DVC's files; `cache: false` ones are git's)."""
    import yaml
    if not layout.dvc_yaml.exists():
        return []
    doc = yaml.safe_load(layout.dvc_yaml.read_text(encoding="utf-8")) or {}
    paths = []
    for stage in (doc.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            path, opts = next(iter(out.items())) if isinstance(out, dict) else (out, None)
            if (opts or {}).get("cache", True) and "${" not in str(path):
                paths.append(str(path))
    return paths


def untrack_from_git(layout: ProjectLayout, paths: list[str]) -> None:
    """Stop git tracking these DVC-owned paths (files stay on disk).

    Projects made before `tinyloop init` stopped running `git add -A` may have committed
    data/pool to git, and DVC refuses to record an output git tracks ("already tracked by
    SCM"); this repairs them. One `git ls-files` when nothing needs repairing."""
    if not paths:
        return
    tracked = [t for t in run(layout, "git", "ls-files", "-z", "--", *paths).stdout.split("\0")
               if t]
    if tracked:
        owned = sorted({p for p in paths if any(t == p or t.startswith(p.rstrip("/") + "/")
                                               for t in tracked)})
        log.warning("git tracked DVC's %s; untracking them from git (the files stay)",
                    ", ".join(owned))
        run(layout, "git", "rm", "-r", "-q", "--cached", "--", *owned)


GIT_FILES = ["params.yaml", "dvc.yaml", "dvc.lock", ".gitignore", ".dvcignore",
             "models/current/metrics.json", "models/current/map_vs_clicks.json",
             "models/current/source.json",
             "reports/summary.json", "reports/report.md", "reports/workload.csv"]


def git_add_versioned(layout: ProjectLayout) -> None:
    """Stage what git keeps of an iteration: params, pipeline, lock, .dvc pointers,
    .gitignore files and the small metrics files. Batch data stays out of git even where a
    later batch's files already exist (they are DVC's once that batch is finished)."""
    root = layout.root
    paths = [f for f in GIT_FILES if (root / f).exists()]
    for pattern in ("*.dvc", ".gitignore"):
        for f in root.rglob(pattern):
            rel = f.relative_to(root)
            if rel.parts[0] not in (".git", ".dvc", ".tinyloop") and f.is_file():
                paths.append(str(rel))
    run(layout, "git", "add", "-A", "--", *sorted(set(paths)))


def commit_iteration(layout: ProjectLayout, n: int, stages: list[str], *,
                     message: str | None = None, push: bool = True,
                     repro: bool = True) -> VersionResult:
    """Version iteration n: dvc add batch n + model n, record stages, repro, commit, tag,
    and (push) one `dvc push`; the flow pushes in a task of its own that Prefect retries.

    Safe to call again after being killed at any point: every step is idempotent and the
    tag is created last, so a missing tag means "not versioned yet".
    """
    start = time.perf_counter()
    tag = tag_name(n)
    with dvc_lock(layout):
        created = False
        if not tag_exists(layout, tag):
            tracked = [layout.batch_dir(n), layout.model_dir(n)]
            dvc_add(layout, tracked)
            record_stages(layout, stages)
            fault_point("dvc-commit")
            if repro:
                run(layout, "dvc", "repro")
            git_add_versioned(layout)
            if run(layout, "git", "diff", "--cached", "--quiet", check=False).returncode:
                run(layout, "git", "commit", "-q", "-m",
                    message or f"iteration {batch_name(n)}: batch {n} corrected, model retrained")
            run(layout, "git", "tag", "-a", tag, "-m", f"tinyloop iteration {n}")
            created = True
        commit = run(layout, "git", "rev-list", "-n", "1", tag).stdout.strip()
    pushed = push_to_remote(layout) if push else False
    return VersionResult(tag, commit, created, pushed, time.perf_counter() - start)


def push_to_remote(layout: ProjectLayout) -> bool:
    """One `dvc push` of everything versioned so far; False when no remote is configured.
    Raises VersioningError when it fails (the caller decides whether to try again)."""
    if not has_remote(layout):
        return False
    run(layout, "dvc", "push")
    return True


def commit_prepared(layout: ProjectLayout, stages: list[str], message: str) -> None:
    """Record the pool stages (ingest, features, order) and commit them once."""
    with dvc_lock(layout):
        record_stages(layout, stages)
        git_add_versioned(layout)
        if run(layout, "git", "diff", "--cached", "--quiet", check=False).returncode:
            run(layout, "git", "commit", "-q", "-m", message)


# --- history ----------------------------------------------------------------------------------

def iteration_tags(layout: ProjectLayout) -> list[str]:
    out = run(layout, "git", "tag", "-l", "iter-*").stdout.split()
    return sorted(out)


def _show_json(layout: ProjectLayout, rev: str, path: str) -> dict | None:
    proc = run(layout, "git", "show", f"{rev}:{path}", check=False)
    if proc.returncode:
        return None
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return None


def _show_yaml(layout: ProjectLayout, rev: str, path: str) -> dict:
    import yaml
    proc = run(layout, "git", "show", f"{rev}:{path}", check=False)
    return (yaml.safe_load(proc.stdout) or {}) if proc.returncode == 0 else {}


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def history(layout: ProjectLayout) -> list[dict]:
    """One row per iteration tag: metrics, cumulative workload, params changed since the last."""
    rows, previous = [], None
    for tag in iteration_tags(layout):
        n = int(tag.split("-")[1])
        summary = _show_json(layout, tag, "reports/summary.json") or {}
        metrics = _show_json(layout, tag, "models/current/metrics.json") or {}
        params = _flatten(_show_yaml(layout, tag, "params.yaml"))
        changed = {} if previous is None else {
            k: (previous.get(k), v) for k, v in params.items() if previous.get(k) != v}
        changed.update({} if previous is None else {
            k: (v, None) for k, v in previous.items() if k not in params})
        last = (summary.get("batches") or [{}])[-1]
        rows.append({"tag": tag, "iteration": n,
                     "commit": run(layout, "git", "rev-list", "-n", "1", tag).stdout.strip()[:8],
                     "map50": metrics.get("map50", metrics.get("mAP")),
                     "wt_reduction_cum": last.get("wt_reduction_cum"),
                     "wb_reduction_cum": last.get("wb_reduction_cum"),
                     "images": last.get("images_cum"),
                     "params_changed": changed})
        previous = params
    return rows


def format_history(rows: list[dict]) -> str:
    if not rows:
        return "no iterations versioned yet (no iter-NNN tags)"

    def pct(v):
        return "-" if v is None else f"{v:.1f}%"

    def num(v):
        return "-" if v is None else f"{v:.3f}"

    lines = [f"{'tag':<9} {'commit':<8} {'images':>6} {'mAP@.5':>7} {'WT red.':>8} "
             f"{'WB red.':>8}  params changed"]
    for r in rows:
        ch = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in r["params_changed"].items())
        lines.append(f"{r['tag']:<9} {r['commit']:<8} {r['images'] or '-':>6} "
                     f"{num(r['map50']):>7} {pct(r['wt_reduction_cum']):>8} "
                     f"{pct(r['wb_reduction_cum']):>8}  {ch or '-'}")
    return "\n".join(lines)


def restore_commands(tag: str) -> str:
    return f"git checkout {tag} && dvc checkout"
