"""Pascal VOC XML: one file per image, axis-aligned `<bndbox>` objects (and, on reading,
roLabelImg's rotated `<robndbox>` ones: tinyloop.formats.rolabelimg writes those files).

Coordinates are read and written as they stand (pixel coordinates, no 1-based shift): the
HIT-UAV and labelImg files this project meets store them that way. `<difficult>` is kept;
ignore classes (e.g. DontCare) are ordinary `<object>`s here and become ignore regions on
import; on export ignore regions are written back as objects named by their category.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath

from tinyloop.annotations import Annotation, Box, ImageLabels, LabelSet, OrientedBox
from tinyloop.atomic import write_text_atomic
from tinyloop.formats import FormatError, LabelFile, label_name
from tinyloop.formats.registry import (LabelReader, LabelWriter, register_reader,
                                        register_writer, written_to)


def read_voc(path: str | os.PathLike) -> LabelFile:
    """Parse one VOC XML file (roLabelImg `<robndbox>` objects are read too)."""
    path = Path(path)
    root = parse_xml(path)
    out = LabelFile(source=path, image_ref=_text(root, "filename"))
    size = root.find("size")
    if size is not None:
        out.width = _int(size, "width", path)
        out.height = _int(size, "height", path)
    for i, obj in enumerate(root.iter("object"), start=1):
        out.annotations.append(parse_object(obj, path, i))
    return out


def parse_xml(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except FileNotFoundError:
        raise FormatError(path, "label file not found") from None
    except ET.ParseError as e:
        raise FormatError(path, f"not valid XML ({e})",
                          "fix or re-export the file from the labelling tool") from None


def parse_object(obj: ET.Element, path: Path, index: int) -> Annotation:
    """One `<object>` with either a `<bndbox>` or a roLabelImg `<robndbox>`."""
    name = _text(obj, "name")
    if not name:
        raise FormatError(path, f"object {index} has no <name>",
                          "give every object a class name")
    difficult = _text(obj, "difficult") in ("1", "true", "True")
    rb = obj.find("robndbox")
    if rb is not None:
        obox = OrientedBox(*[number(rb, k, path, index)
                             for k in ("cx", "cy", "w", "h", "angle")])
        return Annotation(name, obox.bounding_box(), obox, difficult=difficult)
    if obj.find("bndbox") is None:
        raise FormatError(path, f"object {index} ({name}) has neither <bndbox> nor "
                          "<robndbox>", "draw the box again or delete the object")
    return Annotation(name, parse_bndbox(obj, path, index), difficult=difficult)


def parse_bndbox(obj: ET.Element, path: Path, index: int) -> Box:
    bb = obj.find("bndbox")
    vals = [number(bb, k, path, index) for k in ("xmin", "ymin", "xmax", "ymax")]
    return Box(*vals)


def number(parent: ET.Element, tag: str, path: Path, index: int) -> float:
    text = _text(parent, tag)
    try:
        return float(text)
    except (TypeError, ValueError):
        raise FormatError(path, f"object {index}: <{tag}> is {text!r}, not a number",
                          "fix the coordinate in the label file") from None


def voc_xml(item: ImageLabels) -> str:
    """The VOC XML text for one image (annotations, then ignore regions as objects)."""
    rec = item.image
    root = ET.Element("annotation")
    _sub(root, "folder", str(PurePosixPath(rec.path).parent))
    _sub(root, "filename", PurePosixPath(rec.path).name)
    size = _sub(root, "size")
    for tag, v in (("width", rec.width), ("height", rec.height), ("depth", rec.channels)):
        _sub(size, tag, str(v))
    _sub(root, "segmented", "0")
    objects = [(a.category, a.box, a.difficult) for a in item.annotations] + \
              [(r.category, r.box, False) for r in item.ignore]
    for name, box, difficult in objects:
        obj = _sub(root, "object")
        _sub(obj, "name", name)
        _sub(obj, "pose", "Unspecified")
        _sub(obj, "truncated", "0")
        _sub(obj, "difficult", "1" if difficult else "0")
        bb = _sub(obj, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box.xyxy()):
            _sub(bb, tag, fmt_number(v))
    return to_text(root)


def export_voc(labels: LabelSet, out_dir: str | os.PathLike) -> list[Path]:
    """One `<image id>.xml` per image in out_dir; returns the files written."""
    out_dir = Path(out_dir)
    return [write_text_atomic(out_dir / label_name(item.id, ".xml"), voc_xml(item))
            for item in labels.images]


def fmt_number(v: float) -> str:
    """Integers without a decimal point (as labelImg writes), other floats exactly."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def to_text(root: ET.Element) -> str:
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = text
    return el


def _text(parent: ET.Element | None, tag: str) -> str | None:
    if parent is None:
        return None
    el = parent.find(tag)
    return el.text.strip() if el is not None and el.text is not None else None


def _int(parent: ET.Element, tag: str, path: Path) -> int | None:
    text = _text(parent, tag)
    if text is None:
        return None
    try:
        return int(float(text))
    except ValueError:
        raise FormatError(path, f"<size><{tag}> is {text!r}, not a number",
                          "fix the image size in the label file") from None


register_reader(LabelReader("voc", ".xml", read=read_voc))
register_writer(LabelWriter("voc", written_to(export_voc)))
