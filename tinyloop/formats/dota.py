"""DOTA labelTxt: one `<image stem>.txt` per image, oriented boxes as four corner points.

    imagesource:GoogleEarth          (optional header lines `key:value`, kept as metadata;
    gsd:0.146343590398                gsd = ground sample distance, metres per pixel)
    x1 y1 x2 y2 x3 y3 x4 y4 category difficult

Corners are pixels, clockwise on screen starting at the object's "top-left" corner; the
difficult flag is 0/1 (optional on read, default 0). A line becomes an `Annotation` with
`obox` = the minimum-area rectangle around the four points and `box` = their axis-aligned
bounding box. Export writes `obox.corners()` (or the box's corners for axis-aligned boxes)
and the ignore regions as lines of their category (e.g. DontCare).
"""
from __future__ import annotations

import os
from pathlib import Path

from tinyloop.annotations import Annotation, ImageLabels, LabelSet, OrientedBox
from tinyloop.atomic import write_text_atomic
from tinyloop.formats import (FormatError, LabelFile, corners_box, label_name,
                              read_label_lines)
from tinyloop.formats.voc import fmt_number

HEADER_KEYS = ("imagesource", "gsd")


def read_dota(path: str | os.PathLike) -> LabelFile:
    path = Path(path)
    out = LabelFile(source=path)
    for number, line in enumerate(read_label_lines(path), start=1):
        line = line.strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        if sep and len(line.split()) == 1:
            out.metadata[key.strip()] = _header_value(value.strip())
            continue
        out.annotations.append(_parse_line(line.split(), path, number))
    return out


def _parse_line(tokens: list[str], path: Path, number: int) -> Annotation:
    if len(tokens) not in (9, 10):
        raise FormatError(path, f"line {number}: {len(tokens)} fields; expected "
                          "'x1 y1 x2 y2 x3 y3 x4 y4 category difficult'",
                          "fix or delete the line (class names cannot contain spaces)")
    try:
        vals = [float(t) for t in tokens[:8]]
        difficult = int(tokens[9]) if len(tokens) == 10 else 0
    except ValueError:
        raise FormatError(path, f"line {number}: coordinates or difficult flag are not "
                          f"numbers: {' '.join(tokens)!r}", "fix or delete the line") from None
    pts = [(vals[i], vals[i + 1]) for i in range(0, 8, 2)]
    return Annotation(tokens[8], corners_box(pts), OrientedBox.from_corners(pts),
                      difficult=bool(difficult))


def _header_value(value: str):
    try:
        return float(value)
    except ValueError:
        return None if value.lower() in ("null", "none", "") else value


def dota_lines(item: ImageLabels) -> str:
    meta = item.image.metadata
    lines = [f"{k}:{'null' if meta[k] is None else meta[k]}" for k in HEADER_KEYS
             if k in meta]
    objects = [(a.category, a.box, a.obox, a.difficult) for a in item.annotations] + \
              [(r.category, r.box, r.obox, False) for r in item.ignore]
    for category, box, obox, difficult in objects:
        if any(ch.isspace() for ch in category):
            raise FormatError(item.image.path, f"class {category!r} contains whitespace, "
                              "which DOTA lines cannot hold", "rename the class (e.g. "
                              "use '-' instead of spaces)")
        pts = obox.corners() if obox is not None else \
            [(box.x1, box.y1), (box.x2, box.y1), (box.x2, box.y2), (box.x1, box.y2)]
        coords = " ".join(fmt_number(v) for p in pts for v in p)
        lines.append(f"{coords} {category} {int(difficult)}")
    return "".join(line + "\n" for line in lines)


def export_dota(labels: LabelSet, out_dir: str | os.PathLike) -> list[Path]:
    """One `<image id>.txt` per image in out_dir; returns the files written."""
    out_dir = Path(out_dir)
    return [write_text_atomic(out_dir / label_name(item.id, ".txt"), dota_lines(item))
            for item in labels.images]
