"""Why each image came when it did: the selection records (models/iter-NNN/selection.json)
read for the App's fields and the report. Written by flows/selection.py.

Model n's record ranks the pool's unpublished rest after iteration n, so batch b's images
were chosen by model b-1's record; batch 1, and every batch of a project with
order.select.strategy fixed, came from the fixed order (order.method).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from flows.project.layout import ProjectLayout


@dataclass(frozen=True)
class Chosen:
    """Why one image is in its batch."""
    strategy: str               # the selection strategy, or "fixed:<order.method>"
    score: float | None         # the strategy's score (None for the fixed order)
    reason: str


def read_record(layout: ProjectLayout, n: int) -> dict | None:
    """Model n's selection record, None when it made none."""
    path = layout.selection(n)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def fixed_method(layout: ProjectLayout) -> str:
    """order.method from params.yaml (the fixed order), read without validating the file."""
    import yaml
    try:
        doc = yaml.safe_load(layout.params.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        doc = {}
    return str(((doc.get("order") or {}).get("method")) or "dissimilar")


def batch_strategy(layout: ProjectLayout, batch: int) -> str:
    """The strategy that cut batch `batch` (its record's, else the fixed order's)."""
    record = read_record(layout, batch - 1) if batch > 1 else None
    return record["strategy"] if record else f"fixed:{fixed_method(layout)}"


def chosen_in_batch(layout: ProjectLayout, batch: int) -> dict[str, Chosen]:
    """image id -> why it is in batch `batch`, for the images model batch-1 ranked (an image
    it did not rank, or any image of a batch without a record, is not in it: `chosen` gives
    those the fixed order's entry)."""
    record = read_record(layout, batch - 1) if batch > 1 else None
    ranked = {r["id"]: r for r in (record or {}).get("ranking", [])}
    return {i: Chosen(record["strategy"], r.get("score"), r.get("reason", ""))
            for i, r in ranked.items()}


def chosen(layout: ProjectLayout, batch: int, image_id: str,
           ranked: dict[str, Chosen] | None = None) -> Chosen:
    """Why `image_id` is in batch `batch` (`ranked`: chosen_in_batch, read once per batch)."""
    ranked = chosen_in_batch(layout, batch) if ranked is None else ranked
    if image_id in ranked:
        return ranked[image_id]
    method = fixed_method(layout)
    where = "cut before any model" if batch == 1 else "not among the scored candidates"
    return Chosen(f"fixed:{method}", None, f"fixed order (order.method {method}), {where}")
