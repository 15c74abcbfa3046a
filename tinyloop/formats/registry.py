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

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tinyloop.registry import Registry

# the modules whose import registers formats, in the order their names are listed
FORMAT_MODULES = ("tinyloop.formats.voc", "tinyloop.formats.rolabelimg",
                  "tinyloop.formats.yolo", "tinyloop.formats.dota", "tinyloop.formats.coco")
READERS: Registry["LabelReader"] = Registry(FORMAT_MODULES)
WRITERS: Registry["LabelWriter"] = Registry(FORMAT_MODULES)


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


register_reader = READERS.register
register_writer = WRITERS.register
reader_names = READERS.names     # the formats ingest reads, in FORMAT_MODULES order
writer_names = WRITERS.names     # the formats export writes


def reader(name: str) -> LabelReader:
    found = READERS.get(name)
    if found is None:
        raise ValueError(f"unknown format {name!r}; expected one of {reader_names()}")
    return found


def writer(name: str) -> LabelWriter:
    found = WRITERS.get(name)
    if found is None:
        raise ValueError(f"unknown export format {name!r}; choose one of "
                         f"{', '.join(writer_names())}")
    return found


def label_suffix(name: str) -> str | None:
    return reader(name).suffix


def written_to(write_files: Callable[..., object]) -> Callable:
    """A writer of per-image files (`write_files(labels, out_dir)`) as a LabelWriter's
    `write`: the folder it wrote is the result."""
    def write(labels, out: Path, image_root=None) -> Path:
        write_files(labels, out)
        return out
    return write
