"""The ingest step: data/pool from params.yaml `data`, imported again whenever that changes.

`dvc repro` reruns the ingest stage when params.yaml `data` or the source changes, and then
features and order. The Prefect flows compute the stages themselves, so they follow the same
rule: data/pool/imported_from.json records what the pool was imported from (the `data`
params, the resolved source directory, the path, size and mtime of the source's files) and
the hashes of the files written. A run whose params, source or pool files no longer match
that record imports again, and then:

- the new pool equals the old one (a moved dataset, data.verify_images, ...): only the
  record is updated; features, order and batches are untouched;
- it differs and no batch exists yet: the pool is replaced, the embeddings of images that
  left or changed are dropped (the features step embeds the new ones) and the order is
  rebuilt from scratch;
- a batch exists (data/batches/NNN: annotation started) and the pool only grew (new images,
  every old one as it was): the pool is replaced and the new images are embedded and
  appended to the order after the existing batches (positions never move);
- it changed otherwise and a batch exists: nothing changes on disk and `PoolChanged` says
  what changed and how to go on. Batches are human work: re-ordering or re-labelling the
  pool under them would quietly break the project.

An import that finds problems writes only the report and raises `ImportProblems`, unless
keep_going, exactly as `tinyloop ingest` does; a pool accepted with keep_going stays accepted.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flows.project.layout import ProjectLayout, batch_name
from tinyloop.atomic import write_json_atomic

STAMP = "imported_from.json"   # beside manifest.json: versioned with the pool it describes


class PoolError(RuntimeError):
    """The pool cannot be built as params.yaml asks; `summary` is the import summary."""

    def __init__(self, message: str, summary: str = ""):
        super().__init__(message)
        self.summary = summary


class ImportProblems(PoolError):
    """The import found problems and keep_going was not given."""


class PoolChanged(PoolError):
    """params.yaml `data` changes the pool after annotation started."""


@dataclass
class PoolImport:
    report: dict                # import_report.json
    imported: bool              # False: the pool already matched params.yaml
    summary: str                # what to show people
    changes: list[str] = field(default_factory=list)  # how a replaced pool differed


def stamp_path(layout: ProjectLayout) -> Path:
    return layout.pool / STAMP


def pool_inputs(p) -> dict:
    """What the pool is computed from: the `data` params, the resolved source directory and
    a digest of the source's files."""
    data = json.loads(json.dumps(asdict(p.params.data)))  # JSON types, as read back
    source = Path(p.source).resolve()
    return {"data": data, "source": str(source),
            "source_files": source_digest(source, p.params.data)}


def source_digest(source: Path, data) -> str:
    """A hash of the path, size and mtime of every file the import reads (images, labels,
    oriented labels, split lists): no file is read, yet a fixed, added or removed image
    changes it. A false alarm (a copied dataset: new mtimes) costs one import that finds
    the same pool."""
    h = hashlib.sha1()
    parts = [data.images_dir, data.labels, data.oriented_labels, data.split_dir]
    for top in sorted({source / part for part in parts if part}):
        files = [top] if top.is_file() else sorted(q for q in top.rglob("*") if q.is_file())
        for path in files:
            st = path.stat()
            h.update(f"{path.relative_to(source)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def import_pool(p, keep_going: bool = False) -> PoolImport:
    """Import data.source into data/pool unless the pool already matches; see the module doc."""
    lay, inputs = p.layout, pool_inputs(p)
    if is_current(lay, inputs):
        report = json.loads(lay.import_report.read_text(encoding="utf-8"))
        return PoolImport(report, False, _up_to_date_line(lay, report))
    from tinyloop.ingest import import_dataset, nothing_imported
    labels, report = import_dataset(p.source, p.params.data)
    summary = f"{report.summary()}\nimport report: {lay.import_report}"
    if nothing_imported(report):
        stamp_path(lay).unlink(missing_ok=True)
        write_json_atomic(lay.import_report, report.to_json())
        raise ImportProblems(nothing_imported(report), summary)
    if report.problems and not keep_going:
        stamp_path(lay).unlink(missing_ok=True)  # the report below no longer fits the pool
        write_json_atomic(lay.import_report, report.to_json())
        raise ImportProblems(
            f"{len(report.problems)} problem(s) importing {report.root}: nothing imported. "
            f"Fix them (each is listed with its file and fix in {lay.import_report}) or "
            "rerun with --keep-going to import the rest without the files named", summary)
    changes, what_follows = _install(p, labels, report, inputs)
    if changes:
        summary += f"\n{what_follows}:\n" + "\n".join(f"  {c}" for c in changes)
    return PoolImport(json.loads(lay.import_report.read_text(encoding="utf-8")), True,
                      summary, changes)


def is_current(layout: ProjectLayout, inputs: dict) -> bool:
    """The pool on disk was imported from `inputs` and its files were not replaced since."""
    stamp = _read_json(stamp_path(layout))
    return (stamp is not None and layout.import_report.exists()
            and stamp.get("inputs") == inputs and stamp.get("files") == _pool_files(layout))


def stamp_digest(layout: ProjectLayout) -> str | None:
    """A short hash of the pool's record: it changes whenever the pool is (re)imported."""
    digest = _sha1(stamp_path(layout))
    return digest[:16] if digest else None


# --- replacing the pool -----------------------------------------------------------------------

@dataclass
class _Snapshot:
    """What a pool holds, per image id, in the terms its dependents care about."""
    classes: list[str]
    pixels: dict[str, tuple]    # id -> (dataset root, path, width, height): embeddings
    entries: dict[str, str]     # id -> record, metadata (split) and labels: everything


def _install(p, labels, report, inputs: dict) -> tuple[list[str], str]:
    """Write the imported pool unless that would change the pool under annotated batches
    (new images alone do not: they are appended). Returns how the pool changed ([] for a
    first import or an identical pool) and what follows from it."""
    from tinyloop.ingest import write_pool
    lay = p.layout
    staging = lay.state / "pool-import"   # same file system: files move in with os.replace
    shutil.rmtree(staging, ignore_errors=True)
    new = ProjectLayout(staging)
    write_pool(labels, report, new.manifest, new.ground_truth, new.import_report)
    try:
        before = _snapshot(lay) if lay.manifest.exists() else None
        after = _snapshot(new)
        if before is not None and _same_pool(before, after):
            _write_stamp(lay, inputs, report)  # keep the files: nothing downstream reruns
            return [], ""
        changes = [] if before is None else _describe(lay, before, after, inputs)
        started = lay.batch_numbers()
        if before is not None and started and not _only_grew(before, after):
            raise PoolChanged(_refusal(lay, started, changes, p.source))
        lay.pool.mkdir(parents=True, exist_ok=True)
        for path in (new.manifest, new.ground_truth, new.import_report):
            if path.exists():
                os.replace(path, lay.pool / path.name)
        if not report.has_labels:
            lay.ground_truth.unlink(missing_ok=True)  # no stale labels for a label-less source
        if before is not None and not started:
            _drop_stale_downstream(lay, before, after)
        _write_stamp(lay, inputs, report)
        return changes, ("pool grew: the new images are embedded and appended to the order "
                         "after the existing batches" if started else
                         "pool rebuilt (no batch exists yet): features and order follow")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _snapshot(layout: ProjectLayout) -> _Snapshot:
    from tinyloop.cocofile import read_labels
    manifest = read_labels(layout.manifest)
    truth = {i.id: i for i in read_labels(layout.ground_truth)} \
        if layout.ground_truth.exists() else {}
    root = manifest.info.get("dataset_root")
    pixels, entries = {}, {}
    for item in manifest:
        im, t = item.image, truth.get(item.id)
        pixels[item.id] = (root, im.path, im.width, im.height)
        labels = None if t is None else ([asdict(a) for a in t.annotations],
                                         [asdict(g) for g in t.ignore])
        entries[item.id] = repr((asdict(im), labels))  # asdict has the metadata
    return _Snapshot(list(manifest.categories), pixels, entries)


def _same_pool(a: _Snapshot, b: _Snapshot) -> bool:
    """Same classes, images, splits and labels (the dataset may have moved)."""
    return a.classes == b.classes and a.entries == b.entries


def _only_grew(before: _Snapshot, after: _Snapshot) -> bool:
    """Every image of `before` is in `after` as it was, with the same classes: safe under
    annotated batches (the order keeps every position and appends the new images)."""
    return before.classes == after.classes and all(
        after.entries.get(i) == entry for i, entry in before.entries.items())


def _describe(lay: ProjectLayout, before: _Snapshot, after: _Snapshot,
              inputs: dict) -> list[str]:
    """Lines saying what changed: the params edit, then its effect on the pool."""
    stamp = _read_json(stamp_path(lay))
    if stamp and stamp.get("files") == _pool_files(lay):
        lines = _params_diff(stamp["inputs"], inputs)
    else:
        lines = [f"{lay.pool} was written by another command (`tinyloop ingest`?) or an older "
                 "tinyloop, and params.yaml `data` gives a different pool"]
    if before.classes != after.classes and not any(x.startswith("data.classes:")
                                                   for x in lines):
        lines.append(f"classes: {before.classes} -> {after.classes}")
    added = len(after.entries.keys() - before.entries.keys())
    removed = len(before.entries.keys() - after.entries.keys())
    changed = sum(1 for i in after.entries.keys() & before.entries.keys()
                  if after.entries[i] != before.entries[i])
    lines.append(f"pool: {len(before.entries)} -> {len(after.entries)} images ({added} added, "
                 f"{removed} removed, {changed} with other size, split or labels)")
    return lines


def _params_diff(old: dict, new: dict) -> list[str]:
    lines = [f"data.{k}: {old['data'].get(k)!r} -> {new['data'].get(k)!r}"
             for k in sorted(old["data"].keys() | new["data"].keys())
             if old["data"].get(k) != new["data"].get(k) and k != "source"]
    if old["source"] != new["source"]:
        lines.insert(0, f"data.source: {old['source']} -> {new['source']}")
    return lines or [f"files in {new['source']} changed (params.yaml `data` did not)"]


def _refusal(lay: ProjectLayout, batches: list[int], changes: list[str], source) -> str:
    names = ", ".join(batch_name(n) for n in batches)
    return (f"params.yaml `data` now gives a different pool from the one batches {names} "
            f"({lay.batches}) were annotated on:\n"
            + "\n".join(f"  {c}" for c in changes)
            + "\nAnnotated batches are never rewritten, so nothing was changed. To go on, "
            f"either revert the `data` edit in {lay.params} (`git -C {lay.root} diff "
            "params.yaml` shows it; the pool then matches again), or start a new project "
            f"for the new data (`tinyloop init NEWDIR --source {source}`, or `tinyloop demo "
            "--fresh` for the demo).")


def _drop_stale_downstream(lay: ProjectLayout, before: _Snapshot, after: _Snapshot) -> None:
    """No batch exists: rebuild the order from scratch; keep only embeddings whose image is
    still in the pool, unchanged (the features step embeds the rest)."""
    lay.order.unlink(missing_ok=True)
    keep = {i for i, key in after.pixels.items() if before.pixels.get(i) == key}
    prune_features(lay.features, keep)


def prune_features(features_dir: Path, keep: set[str]) -> None:
    """Drop the rows of the embedding store whose image id is not in `keep`."""
    import numpy as np
    from features.embed import load_store, save_store
    store = load_store(features_dir, mmap=False)
    if store is None:
        return
    vectors, ids, fingerprint = store
    rows = [r for r, i in enumerate(ids) if i in keep]
    if len(rows) < len(ids):
        save_store(features_dir, np.asarray(vectors)[rows], [ids[r] for r in rows],
                   fingerprint)


# --- the record -------------------------------------------------------------------------------

def _write_stamp(lay: ProjectLayout, inputs: dict, report) -> None:
    write_json_atomic(stamp_path(lay), {"inputs": inputs, "files": _pool_files(lay),
                                        "accepted_problems": len(report.problems)})


def _pool_files(lay: ProjectLayout) -> dict:
    return {p.name: _sha1(p) for p in (lay.manifest, lay.ground_truth)}


def _sha1(path: Path) -> str | None:
    return hashlib.sha1(path.read_bytes()).hexdigest() if path.exists() else None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _up_to_date_line(lay: ProjectLayout, report: dict) -> str:
    problems = len(report.get("problems") or [])
    left_out = f"{problems} problem(s) accepted with --keep-going" if problems else \
        "no problems"
    return (f"pool up to date with params.yaml `data`: {report.get('images')} images from "
            f"{report.get('root')}, {left_out} (import report: {lay.import_report})")
