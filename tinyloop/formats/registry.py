"""The label formats tinyloop reads and writes, by name: one registry for ingest, export,
params validation (`data.format`) and the CLI's format choices.

Each format module registers what it reads (`register_reader`) and writes
(`register_writer`) when it is imported; FORMAT_MODULES lists those modules, in the order
their names are offered. Callers never name a format: they ask `reader(name)`,
`writer(name)`, `reader_names()`, `writer_names()`. Adding a format whose labels are one
file per image is its module plus one line in FORMAT_MODULES (docs/architecture.md, "How
to extend").
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# the modules whose import registers formats, in the order their names are listed
FORMAT_MODULES = ("tinyloop.formats.voc", "tinyloop.formats.rolabelimg",
                  "tinyloop.formats.yolo", "tinyloop.formats.dota", "tinyloop.formats.coco")
_READERS: dict[str, "LabelReader"] = {}
_WRITERS: dict[str, "LabelWriter"] = {}


@dataclass(frozen=True)
class LabelReader:
    """How ingest reads a format.

    `suffix`: the ending of an image's label file (ingest looks for them under data.labels);
    None for a format that keeps a whole dataset in one file (COCO: data.labels names it).
    `read(path)`: one label file -> LabelFile. A format whose coordinates need the image
    size (YOLO's normalised ones) sets `read_sized(path, metadata, width, height)` instead;
    ingest calls it once the image is open.
    """
    name: str
    suffix: str | None
    read: Callable | None = None
    read_sized: Callable | None = None


@dataclass(frozen=True)
class LabelWriter:
    """How `tinyloop data export` writes a format: `write(labels, out, image_root)` -> the
    main file or folder written under the folder `out`."""
    name: str
    write: Callable


def register_reader(reader: LabelReader) -> LabelReader:
    _READERS[reader.name] = reader
    return reader


def register_writer(writer: LabelWriter) -> LabelWriter:
    _WRITERS[writer.name] = writer
    return writer


def _load() -> None:
    for module in FORMAT_MODULES:
        importlib.import_module(module)


def reader_names() -> tuple[str, ...]:
    """The formats ingest reads, in FORMAT_MODULES order."""
    _load()
    return tuple(_READERS)


def writer_names() -> tuple[str, ...]:
    """The formats export writes, in FORMAT_MODULES order."""
    _load()
    return tuple(_WRITERS)


def reader(name: str) -> LabelReader:
    _load()
    if name not in _READERS:
        raise ValueError(f"unknown format {name!r}; expected one of {reader_names()}")
    return _READERS[name]


def writer(name: str) -> LabelWriter:
    _load()
    if name not in _WRITERS:
        raise ValueError(f"unknown export format {name!r}; choose one of "
                         f"{', '.join(writer_names())}")
    return _WRITERS[name]


def label_suffix(name: str) -> str | None:
    return reader(name).suffix


def written_to(write_files: Callable[..., object]) -> Callable:
    """A writer of per-image files (`write_files(labels, out_dir)`) as a LabelWriter's
    `write`: the folder it wrote is the result."""
    def write(labels, out: Path, image_root=None) -> Path:
        write_files(labels, out)
        return out
    return write
