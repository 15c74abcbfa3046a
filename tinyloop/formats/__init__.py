"""Readers and writers for the label formats tinyloop imports and exports.

One module per format; each reader turns one source label file into a `LabelFile` (labels as
written, class names not yet checked), and `tinyloop.ingest` checks those against the image
and the configured classes. Writers take a `LabelSet` (already checked).

| format     | module        | reads                              | writes                       |
|------------|---------------|------------------------------------|------------------------------|
| voc        | voc.py        | Pascal VOC XML, one file per image | same                         |
| rolabelimg | rolabelimg.py | roLabelImg XML (<robndbox>)        | same                         |
| yolo       | yolo.py       | YOLO txt, incl. YOLO-OBB corner    | txt + classes.txt (yolo);    |
|            |               | lines; names: classes.txt, *.yaml  | corner lines (yolo-obb);     |
|            |               | `names:`, *.names (find_yolo_names)| ultralytics layout           |
|            |               |                                    | (yolo-dataset)               |
| dota       | dota.py       | DOTA labelTxt (polygon, difficult) | same, the polygon as read    |
| coco       | coco.py       | COCO JSON (+ tinyloop extensions); | same; FiftyOne-ready plain   |
|            |               | unknown keys get a did-you-mean    | COCO                         |

registry.py holds them by name (each module registers its reader and writers): ingest,
export, `data.format` and the CLI's choices ask it, so a new format is a new module plus a
line in FORMAT_MODULES. detect.py finds which of these a dataset folder holds, and its folders and classes
(`detect_layout`, what `tinyloop init --source` writes into params.yaml); it also tells a
darknet split list (`train.txt`: image paths) from a label file.

One bad line or object costs that object, not the file: text readers (YOLO, DOTA) put it in
`LabelFile.problems` and read on; `read_coco` returns its problem list. FormatError is
raised only for a file that cannot be read at all. DOTA and YOLO-OBB keep the source's four
corner points in `Annotation.polygon`, so exporting to them writes back what was read.

docs/formats.md documents every convention (angle units, normalisation, ignore regions).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tinyloop.annotations import (Annotation, AnnotationError, Box, Click, IgnoreRegion,
                                  OrientedBox)

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
    # lines or objects the reader could not use: each costs that one object, never the file
    problems: list[FormatError] = field(default_factory=list)
    # how the file itself names each annotation, for messages that must find it again
    # (COCO: "image 'a.png', annotation 7 (Car): bbox [10, 10, 0, 5]"); empty: by position
    object_names: list[str] = field(default_factory=list)


def corners_box(pts: Sequence[tuple[float, float]]) -> Box:
    """The axis-aligned bounding box of polygon points."""
    xs, ys = zip(*pts)
    return Box(min(xs), min(ys), max(xs), max(ys))


def oriented_box(pts: Sequence[tuple[float, float]], path: Path, where: str) -> OrientedBox:
    """The oriented box around four corner points; FormatError (that line only) when they
    enclose no area."""
    try:
        return OrientedBox.from_corners(list(pts))
    except AnnotationError:
        raise FormatError(path, f"{where}: the 4 points are collinear or repeated (zero "
                          "area); left out", "fix or delete the line") from None


def label_name(image_id: str, suffix: str) -> str:
    """File name of an exported label file: the image id (stable and unique) + suffix."""
    return f"{image_id}{suffix}"
