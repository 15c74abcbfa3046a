"""The ordered pool's batches as the project files hold them: data/order.json, each batch's
images, done marker and corrected labels."""
from __future__ import annotations

import json

from flows.project.project import Project
from tinyloop.annotations import ImageLabels, LabelSet
from tinyloop.cocofile import read_labels


def read_order(p: Project) -> dict[str, dict]:
    return json.loads(p.layout.order.read_text(encoding="utf-8"))


def n_batches(p: Project) -> int:
    return max((v["batch"] for v in read_order(p).values()), default=0)


def batch_ids(p: Project, n: int) -> list[str]:
    """Image ids of batch n in their order."""
    rows = [(v["position"], k) for k, v in read_order(p).items() if v["batch"] == n]
    if not rows:
        raise ValueError(f"batch {n} does not exist in {p.layout.order} "
                         f"(the pool has {n_batches(p)} batches)")
    return [k for _, k in sorted(rows)]


def last_batch(p: Project) -> int:
    """How many batches the loop runs: flows.iterations capped by the pool's batches."""
    total = n_batches(p)
    it = p.params.flows.iterations
    return min(total, it) if it else total


def batch_records(p: Project, n: int) -> LabelSet:
    ids = batch_ids(p, n)
    by_id = {i.id: i for i in read_labels(p.layout.manifest)}
    return LabelSet(p.classes, [ImageLabels(by_id[i].image) for i in ids], {"batch": n})


def is_done(p: Project, n: int) -> bool:
    return p.layout.done_marker(n).exists()


def labeled(p: Project, upto: int) -> LabelSet:
    """Every corrected image of batches 1..upto."""
    items = []
    for n in range(1, upto + 1):
        items.extend(read_labels(p.layout.labels(n)).images)
    return LabelSet(p.classes, items, {"batches": upto})
