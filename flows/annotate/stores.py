"""The annotation stores by name (`flows.store`): where annotators' edits arrive.

Each store module registers a `StoreKind` when imported; STORE_MODULES lists them. The
flows open the configured store with `open_store(root, params)` and use only the
`AnnotationStore` protocol (flows/annotate/annotation_store.py), including `mark_done`,
whose done signal is flows/project/done_signal.py. Adding a store (CVAT, Label Studio) is
its module plus one line in STORE_MODULES (docs/architecture.md, "How to extend").
Registering imports no annotation tool: a store imports its tool when opened.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from flows.annotate.annotation_store import AnnotationStore
from tinyloop.registry import Registry

# the modules whose import registers a store, in the order their names are listed
STORE_MODULES = ("flows.annotate.file_store", "flows.annotate.fiftyone_store")
STORES: Registry["StoreKind"] = Registry(STORE_MODULES)


@dataclass(frozen=True)
class StoreKind:
    """One store: `open(project_root, params)` -> an AnnotationStore on the project."""
    name: str
    open: Callable[[Path, object], AnnotationStore]


register = STORES.register
store_names = STORES.names


def open_store(project_root: str | Path, params) -> AnnotationStore:
    """The store `params.flows.store` names, opened on the project."""
    name = params.flows.store
    kind = STORES.get(name)
    if kind is None:
        raise ValueError(f"flows.store {name!r} is no registered annotation store; known: "
                         f"{', '.join(store_names())}")
    return kind.open(Path(project_root), params)
