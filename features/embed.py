"""Embed the pool: one L2-normalised float32 vector per image, stored incrementally.

The store (`out_dir`, normally data/features/) holds two files:

- ``embeddings.npy``  (N, D) float32, rows L2-normalised; plain .npy, so
                      ``np.load(path, mmap_mode="r")`` maps it without reading it;
- ``ids.json``        {"ids": [N image ids, row order], "fingerprint": {...}}: the extractor,
                      weights and image size the vectors came from;
- ``problems.json``   the images that could not be embedded in the last run, and why.

A re-run embeds only images whose id is not in the store yet (same fingerprint); changing the
extractor, its weights or the image size re-embeds everything. Rows of images that left the pool
are dropped. Both files are replaced atomically (the .npy first; ids.json is the commit point, and
a store whose row count disagrees with ids.json is rebuilt).

Unreadable images and vectors with NaN/inf are reported and skipped; the rest goes on.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from features.config import FeaturesParams
from features.extractors import (PoolImageFiles, build_extractor,
                                 preprocess, resize_square)
from tinyloop.annotations import ImageRecord, LabelSet
from tinyloop.atomic import write_atomic, write_json_atomic
from tinyloop.device import resolve_device

log = logging.getLogger(__name__)

EMBEDDINGS = "embeddings.npy"
IDS = "ids.json"
PROBLEMS = "problems.json"


class EmbedError(ValueError):
    """The pool as a whole cannot be embedded (empty, duplicate ids...)."""


@dataclass
class Problem:
    file: str
    message: str
    fix: str


@dataclass
class EmbedReport:
    embedded: list[str] = field(default_factory=list)   # ids embedded in this run
    reused: int = 0                                       # ids taken from the store
    problems: list[Problem] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"embedded {len(self.embedded)} new images, reused {self.reused}, "
                 f"{len(self.problems)} problems"]
        lines += [f"  {p.file}: {p.message} ({p.fix})" for p in self.problems]
        return "\n".join(lines)


# --- reading images --------------------------------------------------------------------------
class PoolImages(PoolImageFiles):
    """Items (row, image (3, size, size) in [0, 1] or None, error text or None)."""

    def __getitem__(self, i: int):
        image, error = self.load(i)
        if image is None:
            return i, None, error
        return i, resize_square(image[None], self.size)[0], None


def collate_pool(items):
    """Stack the readable images; pass the failures through as (row, error) pairs."""
    ok = [(i, im) for i, im, err in items if err is None]
    failed = [(i, err) for i, _, err in items if err is not None]
    rows = torch.tensor([i for i, _ in ok], dtype=torch.long)
    images = torch.stack([im for _, im in ok]) if ok else torch.empty(0, 3, 1, 1)
    return rows, images, failed


# --- the store -------------------------------------------------------------------------------
def load_store(out_dir: str | os.PathLike, mmap: bool = True
               ) -> tuple[np.ndarray, list[str], dict] | None:
    """(embeddings (N, D), ids, fingerprint) of a consistent store, or None."""
    out_dir = Path(out_dir)
    try:
        meta = json.loads((out_dir / IDS).read_text(encoding="utf-8"))
        vectors = np.load(out_dir / EMBEDDINGS, mmap_mode="r" if mmap else None)
    except (OSError, ValueError):
        return None
    ids = meta.get("ids", [])
    if vectors.ndim != 2 or len(ids) != vectors.shape[0]:
        log.warning("%s: %d rows but %d ids; the store will be rebuilt", out_dir,
                    vectors.shape[0], len(ids))
        return None
    return vectors, ids, meta.get("fingerprint", {})


def save_store(out_dir: str | os.PathLike, vectors: np.ndarray, ids: list[str],
               fingerprint: dict) -> None:
    """Write embeddings.npy then ids.json, each atomically (temp file + rename)."""
    out_dir = Path(out_dir)
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    write_atomic(out_dir / EMBEDDINGS, lambda f: np.save(f, rows))
    write_json_atomic(out_dir / IDS, {"ids": list(ids), "fingerprint": fingerprint})


def fingerprint(params: FeaturesParams) -> dict:
    """What the vectors depend on; a change re-embeds the whole pool."""
    fp = {"extractor": params.extractor, "weights": params.weights,
          "image_size": params.image_size, "seed": params.seed}
    weights_file = params.simnet.checkpoint if params.extractor == "simnet" else params.weights
    if weights_file not in ("none", "imagenet") and Path(weights_file).is_file():
        fp["weights_sha1"] = hashlib.sha1(Path(weights_file).read_bytes()).hexdigest()
    return fp


# --- embedding -------------------------------------------------------------------------------
def _records(labels_or_records: LabelSet | Iterable[ImageRecord]) -> list[ImageRecord]:
    if isinstance(labels_or_records, LabelSet):
        return [im.image for im in labels_or_records.images]
    return [r.image if hasattr(r, "image") else r for r in labels_or_records]


def check_ids(records: list[ImageRecord]) -> None:
    if not records:
        raise EmbedError("the pool is empty: there is nothing to embed; import images first "
                         "(`tinyloop ingest`) and check data.source in params.yaml")
    seen: dict[str, str] = {}
    dups = []
    for r in records:
        if r.id in seen:
            dups.append(f"{r.id!r} ({seen[r.id]} and {r.path})")
        seen[r.id] = r.path
    if dups:
        raise EmbedError(f"duplicate image ids in the pool: {', '.join(dups[:5])}"
                         f"{' ...' if len(dups) > 5 else ''}; every image needs a unique id "
                         "(rename the files or re-import)")


@torch.no_grad()
def embed_images(paths: Sequence[Path], params: FeaturesParams, model=None, progress=True
                 ) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """Embed image files: (vectors (M, D) float32 L2-normalised, their rows in `paths`,
    [(row, why)] for every file that failed or gave a non-finite vector)."""
    from tinyloop.progress import bar
    device = resolve_device(params.device, "features.device")
    if model is None:
        model = build_extractor(params.extractor, params.weights, params.seed,
                                params.simnet.checkpoint)
    model = model.to(device).eval()
    loader = DataLoader(PoolImages(paths, params.image_size), batch_size=params.batch_size,
                        num_workers=params.num_workers, collate_fn=collate_pool,
                        pin_memory=device.type == "cuda")
    chunks, rows, failed = [], [], []
    amp = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else \
        torch.autocast("cpu", enabled=False)
    for batch_rows, images, batch_failed in bar(loader, desc=f"embed {len(paths)} images",
                                                unit="batch", enabled=progress):
        failed += batch_failed
        if len(batch_rows) == 0:
            continue
        with amp:
            vec = model(preprocess(images.to(device, non_blocking=True), params.image_size))
        vec = vec.float().cpu().numpy()
        finite = np.isfinite(vec).all(axis=1)
        for r in batch_rows[~torch.from_numpy(finite)].tolist():
            failed.append((r, "the network produced NaN/inf values for this image"))
        vec, batch_rows = vec[finite], batch_rows[torch.from_numpy(finite)]
        chunks.append(normalise(vec))
        rows += batch_rows.tolist()
    dim = getattr(model, "dim", 0)
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    return vectors, rows, sorted(failed)


def normalise(vec: np.ndarray) -> np.ndarray:
    """Rows to unit L2 norm (an all-zero row stays zero)."""
    norms = np.linalg.norm(vec, axis=1, keepdims=True)
    return (vec / np.maximum(norms, 1e-12)).astype(np.float32)


def update_store(labels_or_records, image_root: str | os.PathLike, params: FeaturesParams,
                 out_dir: str | os.PathLike, progress: bool = True
                 ) -> tuple[np.ndarray, list[str], EmbedReport]:
    """Embed the images of the pool that the store lacks; return the pool's vectors."""
    records = _records(labels_or_records)
    check_ids(records)
    fp = fingerprint(params)
    report = EmbedReport()
    stored = load_store(out_dir, mmap=True)
    have: dict[str, int] = {}
    if stored is not None and stored[2] == fp:
        have = {i: r for r, i in enumerate(stored[1])}
    elif stored is not None:
        log.info("features changed (%s -> %s): re-embedding the whole pool", stored[2], fp)
    todo = [r for r in records if r.id not in have]
    new_vectors = {}
    if todo:
        paths = [Path(image_root) / r.path for r in todo]
        vectors, rows, failed = embed_images(paths, params, progress=progress)
        new_vectors = {todo[row].id: v for row, v in zip(rows, vectors)}
        report.embedded = [todo[row].id for row in rows]
        for row, why in failed:
            report.problems.append(Problem(str(paths[row]), why,
                                           "fix or remove the file; it is left out of the "
                                           "order until it can be read"))
    keep_ids, out = [], []
    for r in records:
        if r.id in have:
            out.append(np.asarray(stored[0][have[r.id]]))
            keep_ids.append(r.id)
            report.reused += 1
        elif r.id in new_vectors:
            out.append(new_vectors[r.id])
            keep_ids.append(r.id)
    dim = stored[0].shape[1] if stored is not None and have else \
        next(iter(new_vectors.values())).shape[0] if new_vectors else 0
    matrix = np.stack(out).astype(np.float32) if out else np.zeros((0, dim), np.float32)
    if not np.isfinite(matrix).all():  # a store damaged on disk
        raise EmbedError(f"{Path(out_dir) / EMBEDDINGS} holds NaN/inf values; delete the "
                         "store to rebuild it")
    if todo or stored is None or len(keep_ids) != len(stored[1]) or stored[2] != fp:
        save_store(out_dir, matrix, keep_ids, fp)
    write_json_atomic(Path(out_dir) / PROBLEMS, [asdict(p) for p in report.problems])
    for p in report.problems:
        log.warning("%s: %s", p.file, p.message)
    return matrix, keep_ids, report


def embed_pool(labels_or_records, image_root: str | os.PathLike, params: FeaturesParams,
               out_dir: str | os.PathLike, progress: bool = True
               ) -> tuple[np.ndarray, list[str]]:
    """Interface entry point: (embeddings (N, D) float32 L2-normalised, ids), incremental.

    Images that cannot be read are skipped (listed in out_dir/problems.json and logged).
    """
    vectors, ids, _ = update_store(labels_or_records, image_root, params, out_dir, progress)
    return vectors, ids
