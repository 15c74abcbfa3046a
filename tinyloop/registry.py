"""Plug-ins of one kind, by name: the mechanics every registry of the project shares.

Label formats (tinyloop.formats.registry), pool orderings (features.ordering), selection
strategies (features.selection), annotation stores (flows.annotate.stores) and detector
families (c3det.detectors) each keep a `Registry`. A plug-in module registers its entry (any
object with a `name`) when it is imported; `modules` lists those modules, in the order their
names are shown (params validation, `--help`). Looking anything up imports them first, so a
registry costs nothing until its kind is used. Standard library only.
"""
from __future__ import annotations

import importlib
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind by name; adding one is its module plus a line in `modules`."""

    def __init__(self, modules: tuple[str, ...]):
        self.modules = modules
        self._entries: dict[str, T] = {}

    def register(self, entry: T) -> T:
        """Make `entry` known under `entry.name` (a module calls this when imported)."""
        self._entries[entry.name] = entry
        return entry

    def entries(self) -> dict[str, T]:
        """name -> entry for every registered plug-in, in `modules` order."""
        for module in self.modules:
            importlib.import_module(module)
        return self._entries

    def so_far(self) -> dict[str, T]:
        """The entries registered until now, importing nothing (for a check that runs while
        the modules import)."""
        return dict(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self.entries())

    def get(self, name: str) -> T | None:
        """The entry called `name`, or None: the caller says what was expected."""
        return self.entries().get(name)
