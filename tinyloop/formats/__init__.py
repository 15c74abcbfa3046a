"""Readers and writers for the label formats tinyloop imports and exports.

One module per format; each reader turns one source label file into a `LabelFile` (labels as
written, class names not yet checked), and `tinyloop.ingest` checks those against the image
and the configured classes. Writers take a `LabelSet` (already checked).

| format      | module        | reads                               | writes                          |
|-------------|---------------|-------------------------------------|---------------------------------|
| voc         | voc.py        | Pascal VOC XML, one file per image  | same                            |
| rolabelimg  | rolabelimg.py | roLabelImg XML (<robndbox>)         | same                            |
| yolo        | yolo.py       | YOLO txt (+ classes.txt/data.yaml)  | txt + classes.txt; ultralytics  |
|             |               | incl. YOLO-OBB 8-coordinate lines   | dataset layout with data.yaml   |
| dota        | dota.py       | DOTA labelTxt (polygon, difficult)  | same                            |
| coco        | coco.py       | COCO JSON (+ tinyloop extensions)   | same; FiftyOne-ready plain COCO |

docs/formats.md documents every convention (angle units, normalisation, ignore regions).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyloop.annotations import Annotation, Box, Click, IgnoreRegion

FORMATS = ("voc", "rolabelimg", "yolo", "dota", "coco")
EXPORT_FORMATS = ("voc", "rolabelimg", "yolo", "yolo-dataset", "dota", "coco",
                  "fiftyone-coco")


class FormatError(ValueError):
    """A label file that cannot be parsed; names the file (and line) and the fix."""

    def __init__(self, file: str | Path, message: str, fix: str = ""):
        self.file, self.message, self.fix = str(file), message, fix
        super().__init__(f"{file}: {message}" + (f"; {fix}" if fix else ""))


def read_label_lines(path: Path) -> list[str]:
    """The lines of a text label file (YOLO, DOTA); FormatError when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(path, f"cannot read label file ({e})") from None


@dataclass
class LabelFile:
    """The labels of one image as a source file states them, before any checks.

    `annotations` holds every object, ignore classes included (ingest turns those into
    ignore regions). Coordinates are pixels (readers of normalised formats take the image
    size).
    """
    source: Path                                  # the label file, for messages
    image_ref: str | None = None                  # image path as the file declares it
    width: int | None = None                      # image size as the file declares it
    height: int | None = None
    annotations: list[Annotation] = field(default_factory=list)
    ignore: list[IgnoreRegion] = field(default_factory=list)
    clicks: list[Click] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    image_id: str | None = None                   # explicit id (tinyloop labels files)


def corners_box(pts: list[tuple[float, float]]) -> Box:
    """The axis-aligned bounding box of polygon points."""
    xs, ys = zip(*pts)
    return Box(min(xs), min(ys), max(xs), max(ys))


def label_name(image_id: str, suffix: str) -> str:
    """File name of an exported label file: the image id (stable and unique) + suffix."""
    return f"{image_id}{suffix}"
