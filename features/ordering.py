"""The pool orderings by name (`order.method`): one registry for order_pool, params
validation, the CLI's choices and the sweep.

Each ordering module registers an `Ordering` when imported; ORDERING_MODULES lists them.
Adding an ordering (a selection strategy) is its module plus one line in ORDERING_MODULES
(docs/architecture.md, "How to extend"). Nothing here imports numpy or faiss.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from tinyloop.registry import Registry

# the modules whose import registers orderings, in the order their names are listed
ORDERING_MODULES = ("features.order_farthest", "features.order_random",
                    "features.order_temporal")
ORDERINGS: Registry["Ordering"] = Registry(ORDERING_MODULES)


class OrderError(ValueError):
    """The pool cannot be ordered as asked; the message names the images and the fix."""


@dataclass
class OrderRequest:
    """The images to place: rows `new_rows` of `ids` (and of `vectors`, when the ordering
    uses embeddings); `existing` is order.json as it was (pool growth)."""
    vectors: Any                      # (N, D) float32 embeddings, or None
    ids: list[str]
    new_rows: Any                     # (M,) int64 indices into ids
    existing: dict[str, dict[str, int]]
    params: Any                       # features.config.OrderParams
    records: Iterable[Any] | None = None   # ImageRecords with metadata (temporal)
    notes: list[str] = field(default_factory=list)   # reported, not fatal
    exact_limit: int | None = None    # benchmarks: pool size up to which the order is exact


@dataclass(frozen=True)
class Ordering:
    """One ordering: `order(request)` -> a permutation of request.new_rows.

    `uses_embeddings`: it reads data/features (an embedding store must exist); orderings
    that do not (random, temporal) give the same batches whatever the features, which the
    sweep uses to run them once per pre-annotator."""
    name: str
    uses_embeddings: bool
    order: Callable[[OrderRequest], Any]


register = ORDERINGS.register
ordering_names = ORDERINGS.names


def ordering(name: str) -> Ordering:
    found = ORDERINGS.get(name)
    if found is None:
        raise OrderError(f"unknown order.method {name!r}; expected one of "
                         f"{', '.join(ordering_names())}")
    return found
