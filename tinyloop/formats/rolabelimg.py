"""roLabelImg XML: VOC-style files whose objects may be rotated boxes.

`<robndbox><cx/><cy/><w/><h/><angle/></robndbox>`: centre and size in pixels, angle in
**radians**, positive = clockwise on screen (y points down), in [0, pi) as roLabelImg
writes it. This is exactly `OrientedBox`. The object's axis-aligned box is the bounding box
of the rotated rectangle. Objects with a plain `<bndbox>` (roLabelImg's `<type>bndbox`) are
axis-aligned. Files written here read back in roLabelImg and in `read_voc`.
"""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath

from tinyloop.annotations import ImageLabels, LabelSet
from tinyloop.atomic import write_text_atomic
from tinyloop.formats import LabelFile, label_name
from tinyloop.formats import voc
from tinyloop.formats.registry import (LabelReader, LabelWriter, register_reader,
                                        register_writer, written_to)


def read_rolabelimg(path: str | os.PathLike) -> LabelFile:
    """Parse one roLabelImg XML file (same structure as VOC, see read_voc)."""
    return voc.read_voc(path)


def rolabelimg_xml(item: ImageLabels) -> str:
    """roLabelImg XML for one image: rotated objects as <robndbox>, the rest as <bndbox>."""
    rec = item.image
    root = ET.Element("annotation", verified="no")
    voc._sub(root, "folder", str(PurePosixPath(rec.path).parent))
    voc._sub(root, "filename", PurePosixPath(rec.path).stem)
    voc._sub(root, "path", rec.path)
    size = voc._sub(root, "size")
    for tag, v in (("width", rec.width), ("height", rec.height), ("depth", rec.channels)):
        voc._sub(size, tag, str(v))
    voc._sub(root, "segmented", "0")
    objects = [(a.category, a.box, a.obox, a.difficult) for a in item.annotations] + \
              [(r.category, r.box, r.obox, False) for r in item.ignore]
    for name, box, obox, difficult in objects:
        obj = voc._sub(root, "object")
        voc._sub(obj, "type", "robndbox" if obox is not None else "bndbox")
        voc._sub(obj, "name", name)
        voc._sub(obj, "pose", "Unspecified")
        voc._sub(obj, "truncated", "0")
        voc._sub(obj, "difficult", "1" if difficult else "0")
        if obox is not None:
            rb = voc._sub(obj, "robndbox")
            vals = (obox.cx, obox.cy, obox.w, obox.h, canonical_angle(obox.angle))
            for tag, v in zip(("cx", "cy", "w", "h", "angle"), vals):
                voc._sub(rb, tag, repr(float(v)))
        else:
            bb = voc._sub(obj, "bndbox")
            for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box.xyxy()):
                voc._sub(bb, tag, voc.fmt_number(v))
    return voc.to_text(root)


def canonical_angle(angle: float) -> float:
    """A rectangle turned by pi is the same rectangle: roLabelImg keeps angles in [0, pi];
    angles outside are folded in (those inside are written unchanged, so reading back is
    exact)."""
    if 0.0 <= angle <= math.pi:
        return angle
    a = math.fmod(angle, math.pi)
    return a + math.pi if a < 0 else a


def export_rolabelimg(labels: LabelSet, out_dir: str | os.PathLike) -> list[Path]:
    """One `<image id>.xml` per image in out_dir; returns the files written."""
    out_dir = Path(out_dir)
    return [write_text_atomic(out_dir / label_name(item.id, ".xml"), rolabelimg_xml(item))
            for item in labels.images]


register_reader(LabelReader("rolabelimg", ".xml", read=read_rolabelimg))
register_writer(LabelWriter("rolabelimg", written_to(export_rolabelimg)))
