"""DOTA labelTxt: one `<image stem>.txt` per image, oriented boxes as four corner points.

    imagesource:GoogleEarth          (optional header lines `key:value`, kept as metadata;
    gsd:0.146343590398                gsd = ground sample distance, metres per pixel)
    x1 y1 x2 y2 x3 y3 x4 y4 category difficult

Corners are pixels, clockwise on screen starting at the object's "top-left" corner; the
difficult flag is 0/1 (optional on read, default 0). A line becomes an `Annotation` with
`obox` = the minimum-area rectangle around the four points, `box` = their axis-aligned
bounding box and `polygon` = the four points as written. A line that cannot be used (wrong
field count, not numbers, points enclosing no area) is one entry of `LabelFile.problems`;
the other lines are still read.

Export writes the polygon while it still fits the boxes (numbers via `fmt_number`:
integers without '.0'), so read -> write gives back the same lines; else `obox.corners()`
(or the box's corners for axis-aligned boxes). Ignore regions are lines of their category
(e.g. DontCare), after the annotations; the difficult flag is always written.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from tinyloop.annotations import Annotation, ImageLabels, LabelSet
from tinyloop.atomic import write_text_atomic
from tinyloop.formats import (FormatError, LabelFile, corners_box, label_name, oriented_box,
                              read_label_lines)
from tinyloop.formats.voc import fmt_number
from tinyloop.formats.registry import (LabelReader, LabelWriter, register_reader,
                                        register_writer, written_to)

HEADER_KEYS = ("imagesource", "gsd")


def read_dota(path: str | os.PathLike) -> LabelFile:
    """Parse one labelTxt file; each unusable line is one entry of `problems` (that object
    is left out, the others are kept). FormatError only when the file cannot be read."""
    path = Path(path)
    out = LabelFile(source=path)
    for number, line in enumerate(read_label_lines(path), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if ":" in tokens[0]:   # header `gsd:0.146` (or `gsd: 0.146`); numbers hold no ":"
            key, _, value = line.strip().partition(":")
            out.metadata[key.strip()] = _header_value(value.strip())
            continue
        try:
            out.annotations.append(_parse_line(tokens, path, number))
        except FormatError as e:
            out.problems.append(e)
    return out


def _parse_line(tokens: list[str], path: Path, number: int) -> Annotation:
    if len(tokens) not in (9, 10):
        raise FormatError(path, f"line {number}: {len(tokens)} fields; expected "
                          "'x1 y1 x2 y2 x3 y3 x4 y4 category difficult'; left out",
                          "fix or delete the line (class names cannot contain spaces)")
    try:
        vals = [float(t) for t in tokens[:8]]
        difficult = int(tokens[9]) if len(tokens) == 10 else 0
    except ValueError:
        raise FormatError(path, f"line {number}: coordinates or difficult flag are not "
                          f"numbers: {' '.join(tokens)!r}; left out",
                          "fix or delete the line") from None
    if not all(math.isfinite(v) for v in vals):
        raise FormatError(path, f"line {number}: a coordinate is not finite: "
                          f"{' '.join(tokens)!r}; left out", "fix or delete the line")
    pts = tuple((vals[i], vals[i + 1]) for i in range(0, 8, 2))
    return Annotation(tokens[8], corners_box(pts), oriented_box(pts, path, f"line {number}"),
                      difficult=bool(difficult), polygon=pts)


def _header_value(value: str):
    try:
        return float(value)
    except ValueError:
        return None if value.lower() in ("null", "none", "") else value


def _header_text(value) -> str:
    if value is None:
        return "null"
    return fmt_number(value) if isinstance(value, (int, float)) else str(value)


def dota_lines(item: ImageLabels) -> str:
    """The labelTxt content for one image: header lines, annotations, ignore regions.

    Corners are the source polygon while it still fits the boxes (a DOTA file read and
    written again gives back its own numbers), else the oriented box's or the box's corners.
    """
    meta = item.image.metadata
    lines = [f"{k}:{_header_text(meta[k])}" for k in HEADER_KEYS if k in meta]
    objects = [(a, a.difficult) for a in item.annotations] + [(r, False) for r in item.ignore]
    for obj, difficult in objects:
        if any(ch.isspace() for ch in obj.category):
            raise FormatError(item.image.path, f"class {obj.category!r} contains whitespace, "
                              "which DOTA lines cannot hold", "rename the class (e.g. "
                              "use '-' instead of spaces)")
        coords = " ".join(fmt_number(v) for p in obj.outline() for v in p)
        lines.append(f"{coords} {obj.category} {int(difficult)}")
    return "".join(line + "\n" for line in lines)


def export_dota(labels: LabelSet, out_dir: str | os.PathLike) -> list[Path]:
    """One `<image id>.txt` per image in out_dir; returns the files written."""
    out_dir = Path(out_dir)
    return [write_text_atomic(out_dir / label_name(item.id, ".txt"), dota_lines(item))
            for item in labels.images]


register_reader(LabelReader("dota", ".txt", read=read_dota))
register_writer(LabelWriter("dota", written_to(export_dota)))
