"""Which format and layout a dataset folder holds, found from its files.

    found = detect_layout("/data/VOC2007")
    found.describe()      # "voc labels: 12 files in Annotations/, 12 images in JPEGImages/ ..."
    found.data_params()   # {"format": "voc", "images_dir": "JPEGImages", "labels": ...}

`tinyloop init --source DIR` writes `data_params()` into params.yaml, and an import that finds
no images names them as the fix. Recognised: a COCO JSON (root or annotations/), Pascal VOC
XML (roLabelImg when the objects are <robndbox>es; both in one folder pair = HIT-UAV's VOC +
oriented labels), YOLO txt (ultralytics images/ + labels/, Roboflow train/images +
train/labels, flat darknet folders) and DOTA labelTxt. Text files whose lines are image
paths are darknet split lists (`train.txt`), never label files.
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tinyloop.images import is_image_file

COCO_PLACES = (".", "annotations")     # where a COCO JSON is looked for
VOC_SPLIT_DIR = "ImageSets/Main"
NOT_LABELS = ("classes.txt",)          # text files that sit among labels but are not


@dataclass
class DetectedLayout:
    """What a dataset folder holds, in params.yaml `data` terms (paths relative to it)."""
    format: str | None                 # None: images without labels
    images_dir: str
    labels: str | None
    images: int                        # image files under images_dir
    label_files: int = 0
    oriented_labels: str | None = None  # roLabelImg folder merged into VOC (HIT-UAV)
    split_dir: str | None = None
    classes: list[str] = field(default_factory=list)
    classes_from: str = ""             # where the class names were found
    notes: list[str] = field(default_factory=list)

    def data_params(self) -> dict:
        """The params.yaml `data` keys for this layout (classes only when found)."""
        out = {"images_dir": self.images_dir}
        if self.format is not None:
            out.update(format=self.format, labels=self.labels,
                       oriented_labels=self.oriented_labels, split_dir=self.split_dir)
        if self.classes:
            out["classes"] = list(self.classes)
        return out

    def describe(self) -> str:
        """"a voc dataset: 12 images in JPEGImages/, labels in Annotations/ (12 files)"."""
        images = f"{self.images} images in {self.images_dir}/"
        if self.format is None:
            return f"an unlabeled image folder: {images}"
        labels = f"labels in {self.labels}" if self.format == "coco" else \
            f"labels in {self.labels}/ ({self.label_files} files)"
        parts = [images, labels]
        if self.oriented_labels:
            parts.append(f"oriented boxes in {self.oriented_labels}/")
        if self.split_dir:
            parts.append(f"splits in {self.split_dir}/")
        return f"a {self.format} dataset: " + ", ".join(parts)


def detect_layout(root: str | os.PathLike,
                  ignore_classes: tuple[str, ...] = ("DontCare",)) -> DetectedLayout | None:
    """The layout of the dataset at `root`, or None when it holds no image at all."""
    root = Path(root)
    files = _files(root)
    images = [f for f in files if is_image_file(f)]
    if not images:
        return None
    found = _coco(root, files, images) or _per_image_labels(root, files, images)
    if found is None:
        found = DetectedLayout(None, _common_dir(images), None, len(images))
        found.notes.append("no label files found: the images import unlabeled")
    if (root / VOC_SPLIT_DIR).is_dir() and found.format in ("voc", "rolabelimg"):
        found.split_dir = VOC_SPLIT_DIR
    found.classes = [c for c in found.classes if c not in ignore_classes]
    return found


def _files(root: Path) -> list[PurePosixPath]:
    """Every file under root, relative, hidden folders (.git, .dvc) skipped."""
    out = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = PurePosixPath(Path(folder).relative_to(root).as_posix())
        out += [rel / n for n in sorted(names) if not n.startswith(".")]
    return out


def _common_dir(paths: list[PurePosixPath]) -> str:
    """The deepest folder holding all of `paths` ("." for the root itself)."""
    common = os.path.commonpath([p.parent.as_posix() or "." for p in paths])
    return common or "."


def _images_dir(images: list[PurePosixPath], label_stems: set[str]) -> str:
    """The folder of the images the labels name: the common folder of the images whose
    stem a label file has, or the one top folder that holds all of them (VOC2012 keeps
    same-named PNG masks in SegmentationClass/ beside JPEGImages/)."""
    matched = [p for p in images if p.stem in label_stems] or images
    common = _common_dir(matched)
    if common != "." or not label_stems:
        return common
    by_top = Counter(p.parts[0] for p in matched if len(p.parts) > 1)
    stems_by_top = {top: {p.stem for p in matched if p.parts[0] == top} for top in by_top}
    whole = [top for top, stems in stems_by_top.items() if stems >= label_stems]
    return whole[0] if len(whole) == 1 else common


# --- COCO ---------------------------------------------------------------------------------

def _coco(root: Path, files: list[PurePosixPath],
          images: list[PurePosixPath]) -> DetectedLayout | None:
    """The COCO file listing the most images, among *.json at the root and in annotations/."""
    docs = []
    for rel in files:
        if rel.suffix.lower() == ".json" and str(rel.parent) in COCO_PLACES:
            doc = _load_json(root / rel)
            if isinstance(doc, dict) and all(isinstance(doc.get(k), list) for k in
                                             ("images", "annotations", "categories")):
                docs.append((len(doc["images"]), rel, doc))
    if not docs:
        return None
    n, rel, doc = max(docs, key=lambda d: d[0])
    names = [im.get("file_name") for im in doc["images"] if isinstance(im, dict)]
    cats = [c for c in doc["categories"] if isinstance(c, dict) and "name" in c]
    found = DetectedLayout("coco", _coco_images_dir(root, names, images), rel.as_posix(),
                           len(images), classes=[str(c["name"]) for c in cats],
                           classes_from=rel.as_posix())
    if len(docs) > 1:
        others = ", ".join(str(d[1]) for d in docs if d[1] != rel)
        found.notes.append(f"{rel} lists the most images ({n}); also found {others} (one "
                           "labels file per project: set data.labels to choose)")
    return found


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _coco_images_dir(root: Path, names: list, images: list[PurePosixPath]) -> str:
    """The folder the file_names are relative to: the root, else the image folder where
    the first one that exists is found."""
    first = next((n for n in names if isinstance(n, str)), None)
    if first is None or (root / first).is_file():
        return "."
    folders = sorted({str(p.parent) for p in images}, key=len)
    return next((d for d in folders if (root / d / first).is_file()), _common_dir(images))


# --- one label file per image -------------------------------------------------------------

def _per_image_labels(root: Path, files: list[PurePosixPath],
                      images: list[PurePosixPath]) -> DetectedLayout | None:
    """VOC / roLabelImg / YOLO / DOTA: the kind most label files are, with its folders."""
    kinds: dict[str, list[PurePosixPath]] = {}
    for rel in files:
        kind = _label_kind(root / rel)
        if kind is not None:
            kinds.setdefault(kind, []).append(rel)
    if not kinds:
        return None
    main = "voc" if "voc" in kinds else max(kinds, key=lambda k: len(kinds[k]))
    if main == "voc" and "rolabelimg" in kinds:
        # an oriented file without any rotated box reads as plain VOC (HIT-UAV's
        # labels_rotated/ holds some): it belongs to the oriented folder, not the labels
        oriented_dir = _common_dir(kinds["rolabelimg"])
        plain = [p for p in kinds["voc"] if not p.is_relative_to(oriented_dir)]
        kinds["voc"] = plain or kinds["voc"]
    labels = kinds[main]
    found = DetectedLayout(main, _images_dir(images, {p.stem for p in labels}),
                           _common_dir(labels), len(images), len(labels))
    if main == "voc" and "rolabelimg" in kinds:
        oriented = _common_dir(kinds["rolabelimg"])
        if oriented != found.labels:
            found.oriented_labels = oriented
    found.images = sum(1 for p in images if found.images_dir == "." or
                       p.is_relative_to(found.images_dir))
    _add_classes(root, found, labels)
    return found


def _label_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix == ".xml":
        return _xml_kind(path)
    if suffix != ".txt" or path.name in NOT_LABELS or path.name.lower().startswith("readme") \
            or VOC_SPLIT_DIR in path.as_posix() or is_image_list(path):
        return None
    line = next(iter(_content_lines(path)), None)
    if line is None:
        return None         # empty: a label file of no format in particular
    if _is_yolo_line(line.split()):
        return "yolo"
    if _is_dota_line(line.split()):
        return "dota"
    return None


def _xml_kind(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if "<annotation" not in text:
        return None
    return "rolabelimg" if "<robndbox>" in text else "voc"


def _add_classes(root: Path, found: DetectedLayout, labels: list[PurePosixPath]) -> None:
    """Class names as the labels state them: yolo from its names file, the others from
    the objects (in order of first appearance)."""
    if found.format == "yolo":
        from tinyloop.formats import FormatError
        from tinyloop.formats.yolo import find_yolo_names
        try:
            names = find_yolo_names(root / found.labels, root)
        except FormatError as e:
            names, reason = None, f" ({e})"
        else:
            reason = ""
        if names is None:
            found.notes.append(f"YOLO labels but no class names{reason}: write classes.txt "
                               "(one name per line, line 1 = class 0) beside them")
            return
        found.classes = list(dict.fromkeys(names.names))
        found.classes_from = names.source.relative_to(root).as_posix() \
            if names.source.is_relative_to(root) else str(names.source)
        return
    seen: dict[str, None] = {}
    for rel in labels:
        for name in (_xml_names(root / rel) if found.format in ("voc", "rolabelimg")
                     else _dota_names(root / rel)):
            seen.setdefault(name, None)
    found.classes, found.classes_from = list(seen), f"the objects in {found.labels}/"


def _xml_names(path: Path) -> list[str]:
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError):
        return []           # the import reports it
    return [(o.findtext("name") or "").strip() for o in tree.getroot().iter("object")
            if (o.findtext("name") or "").strip()]


def _dota_names(path: Path) -> list[str]:
    return [line.split()[8] for line in _content_lines(path) if _is_dota_line(line.split())]


# --- what a text file holds ---------------------------------------------------------------

def _content_lines(path: Path) -> list[str]:
    """Non-empty lines without `#` comments; [] when the file cannot be read as UTF-8."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def is_image_list(path: str | os.PathLike) -> bool:
    """A text file whose every line is an image path: a darknet split list (train.txt),
    not a label file."""
    lines = _content_lines(Path(path))
    return bool(lines) and all(is_image_file(line) for line in lines)


def image_list_paths(path: str | os.PathLike) -> list[str]:
    """The image paths a split list names, as written."""
    return _content_lines(Path(path))


def looks_like_label_lines(path: str | os.PathLike) -> bool:
    """False for a text file with lines, none of which reads as a YOLO or DOTA label (notes
    left among the labels); True for an empty or unreadable file (the reader reports
    those)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return True
    lines = [line.split() for line in text.splitlines() if line.split()]
    return not lines or any(_is_yolo_line(t) or _is_dota_line(t) or ":" in t[0]
                            for t in lines)


def _numbers(tokens: list[str]) -> bool:
    try:
        [float(t) for t in tokens]
    except ValueError:
        return False
    return True


def _is_yolo_line(tokens: list[str]) -> bool:
    return len(tokens) in (5, 6, 9) and tokens[0].isdigit() and _numbers(tokens[1:])


def _is_dota_line(tokens: list[str]) -> bool:
    return len(tokens) in (9, 10) and _numbers(tokens[:8]) and not _numbers(tokens[8:9])
