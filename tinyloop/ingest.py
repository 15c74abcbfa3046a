"""Import a raw dataset (images + labels in any supported format) into one checked LabelSet.

    labels, report = import_dataset("sample/hit-uav", params.data)
    print(report.summary())
    write_pool(labels, report, layout.manifest, layout.ground_truth, layout.import_report)

The import never stops at a bad file: every problem (corrupt or truncated image, missing
image, box outside the image, zero-area box, unknown class, duplicate image id, a label path
escaping the dataset root, unparsable label file) becomes a `Problem(file, message, fix)` in
the report, the offending image or object is left out, and everything else is imported.
Only a dataset that cannot be read at all (no such directory) raises `DatasetError`.

Layout of a dataset root (names from `DataParams`): `images_dir/` holds the images (nested
folders allowed); `labels` is a directory of per-image label files mirroring images_dir
(voc, rolabelimg, yolo, dota) or one JSON file (coco); `split_dir/<split>.txt` lists image
ids per split. The image id is the file stem (HIT-UAV's `0_100_30_0_03281`); paths stored
in ImageRecord are relative to the dataset root.
"""
from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from tqdm import tqdm

from tinyloop.annotations import (Annotation, AnnotationError, IgnoreRegion, ImageLabels,
                                  ImageRecord, LabelSet)
from tinyloop.atomic import write_json_atomic
from tinyloop.cocofile import write_labels
from tinyloop.config import DataParams
from tinyloop.formats import FORMATS, FormatError, LabelFile
from tinyloop.formats.coco import read_coco
from tinyloop.formats.dota import read_dota
from tinyloop.formats.voc import read_voc
from tinyloop.formats.yolo import read_yolo, read_yolo_names
from tinyloop.images import ImageError, ImageInfo, inspect_image, is_image_file

# <night>_<altitude m>_<camera angle deg>_<flight part>_<frame>, e.g. 0_100_30_0_03281
HITUAV_NAME = re.compile(r"^(?P<night>[01])_(?P<alt>\d+)_(?P<angle>\d+)_(?P<part>\d+)_"
                         r"(?P<frame>\d+)$")
LABEL_SUFFIX = {"voc": ".xml", "rolabelimg": ".xml", "yolo": ".txt", "dota": ".txt"}
MIN_MATCH_IOU = 0.3  # HIT-UAV's VOC and roLabelImg boxes of one object overlap >= 0.70


class DatasetError(ValueError):
    """The dataset as a whole cannot be read (missing root, unknown format)."""


@dataclass(frozen=True)
class Problem:
    file: str      # the file at fault (image, label file, split list)
    message: str   # what is wrong
    fix: str       # what to do about it

    def __str__(self) -> str:
        return f"{self.file}: {self.message}\n    fix: {self.fix}"


@dataclass
class ImportReport:
    root: str
    format: str
    images: int = 0             # images imported
    labeled: int = 0            # of those, images with a label file
    annotations: int = 0
    ignore_regions: int = 0
    oriented: int = 0           # annotations with an oriented box
    has_labels: bool = False    # the source has labels at all
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, file: str | Path, message: str, fix: str) -> None:
        """Record a problem; files inside the dataset are named relative to its root."""
        path = Path(file)
        if path.is_absolute() and path.is_relative_to(self.root):
            file = path.relative_to(self.root).as_posix()
        self.problems.append(Problem(str(file), message, fix))

    def summary(self, max_problems: int = 50) -> str:
        lines = [f"imported {self.images} images from {self.root} ({self.format}) in "
                 f"{self.seconds:.1f} s: {self.labeled} with labels, {self.annotations} "
                 f"objects ({self.oriented} oriented), {self.ignore_regions} ignore regions"]
        lines += [f"note: {n}" for n in self.notes]
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s); the files or objects named were "
                         "left out:")
            lines += [str(p) for p in self.problems[:max_problems]]
            if len(self.problems) > max_problems:
                lines.append(f"... and {len(self.problems) - max_problems} more (all are in "
                             "the import report JSON)")
        else:
            lines.append("no problems found")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def import_dataset(root: str | os.PathLike, data: DataParams, progress: bool = True,
                   workers: int = 2) -> tuple[LabelSet, ImportReport]:
    """Read and check a whole dataset; see the module docstring. Never raises per file."""
    start = time.perf_counter()
    root = Path(root).resolve()
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset directory not found; set data.source in "
                           "params.yaml (or --source) to the folder holding the images")
    if data.format not in FORMATS:
        raise DatasetError(f"unknown format {data.format!r}; expected one of {FORMATS}")
    report = ImportReport(str(root), data.format)
    if data.format == "coco":
        sources = _coco_sources(root, data, report)
    else:
        sources = _directory_sources(root, data, report)
    splits = _read_splits(root, data, report, set(sources))
    items = _check_images(root, sources, data, splits, report, progress, workers)
    labels = LabelSet(categories=list(data.classes), images=items,
                      info={"dataset_root": str(root), "source_format": data.format})
    report.seconds = time.perf_counter() - start
    return labels, report


def write_pool(labels: LabelSet, report: ImportReport, manifest: str | os.PathLike,
               ground_truth: str | os.PathLike,
               report_path: str | os.PathLike | None = None) -> list[Path]:
    """Write the manifest (images only), the ground truth (when the source has labels) and
    the report, each atomically; returns the files written."""
    images_only = replace(labels, images=[ImageLabels(item.image) for item in labels.images])
    written = [write_labels(images_only, manifest)]
    if report.has_labels:
        written.append(write_labels(labels, ground_truth))
    if report_path is not None:
        written.append(write_json_atomic(report_path, report.to_json()))
    return written


# --- finding images and their label files ------------------------------------------------

@dataclass
class _Source:
    """One image to import: its path (relative to root) and its label file, if any."""
    path: str
    labels: LabelFile | None = None
    label_path: Path | None = None   # for formats parsed once the image size is known
    oriented: LabelFile | None = None


def _directory_sources(root: Path, data: DataParams, report: ImportReport) -> dict[str, _Source]:
    images_dir = root / data.images_dir
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: images directory not found; set data.images_dir "
                           f"(relative to {root})")
    sources = _index_images(root, images_dir, report)
    labels_dir = root / data.labels
    if not labels_dir.is_dir():
        report.notes.append(f"no labels directory {labels_dir}: imported the images "
                            "unlabeled (set data.labels if they do have labels)")
        return sources
    report.has_labels = True
    by_rel = {_rel_key(root / s.path, images_dir): i for i, s in sources.items()}
    suffix = LABEL_SUFFIX[data.format]
    yolo_names = None
    if data.format == "yolo":
        yolo_names = read_yolo_names(labels_dir, root) or list(data.classes) + \
            list(data.ignore_classes)
    oriented_dir = root / data.oriented_labels if data.format == "voc" and \
        data.oriented_labels else None
    if oriented_dir is not None and not oriented_dir.is_dir():
        report.notes.append(f"no oriented labels directory {oriented_dir}: boxes are "
                            "axis-aligned only")
        oriented_dir = None
    claimed: dict[str, Path] = {}
    for label_path in sorted(labels_dir.rglob(f"*{suffix}")):
        if label_path.name in ("classes.txt",) or not label_path.is_file():
            continue
        try:
            lf = _read_label_file(data.format, label_path)
        except FormatError as e:
            report.add(e.file, e.message, e.fix or "fix or re-export the label file")
            continue
        except Exception as e:  # noqa: BLE001 - one odd file must not stop the import
            report.add(label_path, f"cannot read label file ({type(e).__name__}: {e})",
                       "fix or re-export the label file")
            continue
        image_id = _resolve_image(lf, label_path, labels_dir, images_dir, root, by_rel,
                                  sources, report)
        if image_id is None:
            continue
        if image_id in claimed:
            report.add(label_path, f"duplicate labels for image id {image_id!r}: "
                       f"{claimed[image_id]} labels it already; this file was left out",
                       "keep one label file per image")
            continue
        claimed[image_id] = label_path
        src = sources[image_id]
        if data.format == "yolo":
            src.label_path = label_path
            src.labels = LabelFile(source=label_path, metadata={"yolo_names": yolo_names})
        else:
            src.labels = lf
        if oriented_dir is not None:
            src.oriented = _read_oriented(oriented_dir / label_path.relative_to(labels_dir),
                                          report)
    return sources


def _read_label_file(fmt: str, path: Path) -> LabelFile:
    if fmt in ("voc", "rolabelimg"):
        return read_voc(path)  # one XML reader: it knows <bndbox> and <robndbox>
    if fmt == "dota":
        return read_dota(path)
    return LabelFile(source=path)  # yolo: parsed once the image size is known


def _read_oriented(path: Path, report: ImportReport) -> LabelFile | None:
    if not path.is_file():
        return None
    try:
        return read_voc(path)
    except FormatError as e:
        report.add(e.file, e.message, e.fix or "fix or re-export the label file")
        return None


def _index_images(root: Path, images_dir: Path, report: ImportReport) -> dict[str, _Source]:
    """Every image under images_dir by id (file stem); a second file with a taken id is
    reported and left out."""
    sources: dict[str, _Source] = {}
    for path in sorted(p for p in images_dir.rglob("*") if is_image_file(p)):
        rel = path.relative_to(root).as_posix()
        image_id = path.stem
        if image_id in sources:
            report.add(rel, f"duplicate image id {image_id!r}: {sources[image_id].path} "
                       "has the same file name stem; this image was left out",
                       "rename one of the files (ids are file names without extension)")
            continue
        sources[image_id] = _Source(rel)
    return sources


def _rel_key(path: Path, base: Path) -> str:
    """'sub/name' for base/sub/name.ext: how label files mirror image files."""
    return path.relative_to(base).with_suffix("").as_posix()


def escapes_root(ref: str) -> bool:
    """True for a path that is absolute (POSIX or Windows) or climbs out with '..'."""
    if PurePosixPath(ref).is_absolute() or PureWindowsPath(ref).is_absolute() or \
            PureWindowsPath(ref).drive or ref.startswith(("\\", "/")):
        return True
    depth = 0
    for part in re.split(r"[\\/]+", ref):
        depth += -1 if part == ".." else (0 if part in ("", ".") else 1)
        if depth < 0:
            return True
    return False


def _resolve_image(lf: LabelFile, label_path: Path, labels_dir: Path, images_dir: Path,
                   root: Path, by_rel: dict[str, str], sources: dict[str, _Source],
                   report: ImportReport) -> str | None:
    """The id of the image a label file belongs to, or None (problem reported).

    The label file's own path (labels/sub/x.xml -> images/sub/x.*) decides; a declared
    file name (VOC <filename>) is checked for escaping the root and used when the path
    does not match.
    """
    ref = lf.image_ref
    if ref and escapes_root(ref):
        report.add(label_path, f"image path {ref!r} escapes the dataset root {root}; "
                   "this label file was left out",
                   f"write the image path relative to {images_dir.relative_to(root)}/ "
                   "(no absolute paths, no '..')")
        return None
    key = _rel_key(label_path, labels_dir)
    if key in by_rel:
        return by_rel[key]
    if ref:
        ref_path = PurePosixPath(ref.replace("\\", "/"))
        # roLabelImg writes <filename> without the extension, VOC with it
        ref_key = (ref_path.with_suffix("") if is_image_file(ref_path)
                   else ref_path).as_posix()
        if ref_key in by_rel:
            return by_rel[ref_key]
        if PurePosixPath(ref_key).name in sources:
            return PurePosixPath(ref_key).name
    if label_path.stem in sources:
        return label_path.stem
    expected = images_dir.relative_to(root) / (ref or key + ".*")
    report.add(label_path, f"missing image file: no image {expected} for this label file; "
               "its labels were left out",
               "add the image, or delete the label file if the image is gone")
    return None


def _coco_sources(root: Path, data: DataParams, report: ImportReport) -> dict[str, _Source]:
    """Images as the COCO file lists them; file_name relative to root or to images_dir."""
    coco_path = root / data.labels
    if coco_path.is_dir() or not coco_path.exists():
        raise DatasetError(f"{coco_path}: COCO labels file not found; set data.labels to "
                           f"the JSON file (relative to {root})")
    try:
        categories, files, problems = read_coco(coco_path)
    except FormatError as e:
        raise DatasetError(str(e)) from None
    except (AnnotationError, KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{coco_path}: not a readable COCO file ({type(e).__name__}: "
                           f"{e}); check it against docs/formats.md") from None
    for e in problems:
        report.add(e.file, e.message, e.fix)
    report.has_labels = True
    sources: dict[str, _Source] = {}
    for lf in files:
        ref = str(lf.image_ref)
        if escapes_root(ref):
            report.add(coco_path, f"image file_name {ref!r} escapes the dataset root {root}; "
                       "this image was left out",
                       "write file_name relative to the dataset root (no absolute paths, "
                       "no '..')")
            continue
        candidates = [root / ref, root / data.images_dir / ref]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            report.add(coco_path, f"missing image file {ref!r} (looked in {root} and "
                       f"{root / data.images_dir}); its labels were left out",
                       "add the image, or remove its entry from the COCO file")
            continue
        image_id = lf.image_id or found.stem
        if image_id in sources:
            report.add(coco_path, f"duplicate image id {image_id!r}: {ref!r} and "
                       f"{sources[image_id].path!r}; the second was left out",
                       "give every image its own file name stem (or tinyloop id)")
            continue
        sources[image_id] = _Source(found.relative_to(root).as_posix(), labels=lf)
    return sources


def _read_splits(root: Path, data: DataParams, report: ImportReport,
                 ids: set[str]) -> dict[str, str]:
    """id -> split from split_dir/<split>.txt (one id per line)."""
    if not data.split_dir or not (root / data.split_dir).is_dir():
        return {}
    splits: dict[str, str] = {}
    for path in sorted((root / data.split_dir).glob("*.txt")):
        missing = []
        for line in path.read_text(encoding="utf-8").splitlines():
            image_id = line.strip()
            if not image_id:
                continue
            if image_id in splits and splits[image_id] != path.stem:
                report.add(path, f"image {image_id!r} is in both {splits[image_id]!r} and "
                           f"{path.stem!r}", "list every image in one split only")
                continue
            if image_id not in ids:
                missing.append(image_id)
            splits[image_id] = path.stem
        if missing:
            report.add(path, f"missing image file(s): {len(missing)} listed id(s) have no "
                       f"image: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}",
                       "add the images or delete the ids from the list")
    return splits


# --- checking images and labels ----------------------------------------------------------

def _check_images(root: Path, sources: dict[str, _Source], data: DataParams,
                  splits: dict[str, str], report: ImportReport, progress: bool,
                  workers: int) -> list[ImageLabels]:
    decode = data.verify_images == "decode"
    ids = sorted(sources)

    def inspect(image_id: str) -> ImageInfo | ImageError:
        path = root / sources[image_id].path
        try:
            return inspect_image(path, decode=decode)
        except ImageError as e:
            return e
        except Exception as e:  # noqa: BLE001 - a decoder bug on one file must not stop us
            return ImageError(path, f"cannot read image ({type(e).__name__}: {e})",
                              "re-export it as PNG or JPEG, or remove it from the dataset")

    items = []
    # Pillow releases the GIL while decoding: threads give a real speed-up on big images.
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(inspect, ids)
        for image_id, info in tqdm(zip(ids, results), total=len(ids), unit="img",
                                   desc="checking images", disable=not progress):
            src = sources[image_id]
            if isinstance(info, ImageError):
                report.add(src.path, f"{info.reason}; the image and its labels were "
                           "left out", info.fix)
                continue
            items.append(_image_labels(image_id, src, info, data, splits, report))
    return items


def _image_labels(image_id: str, src: _Source, info: ImageInfo, data: DataParams,
                  splits: dict[str, str], report: ImportReport) -> ImageLabels:
    metadata = _metadata(image_id, src, info, splits, data)
    lf = src.labels
    if src.label_path is not None:  # yolo: normalised, needs the size
        try:
            lf = read_yolo(src.label_path, lf.metadata["yolo_names"], info.width, info.height)
        except FormatError as e:
            report.add(e.file, e.message + "; its labels were left out", e.fix)
            lf = None
        except Exception as e:  # noqa: BLE001 - one odd file must not stop the import
            report.add(src.label_path, f"cannot read label file ({type(e).__name__}: {e}); "
                       "its labels were left out", "fix or re-export the label file")
            lf = None
    if lf is not None and lf.metadata:
        metadata.update(lf.metadata)
    record = ImageRecord(id=image_id, path=src.path, width=info.width, height=info.height,
                         channels=info.channels, metadata=metadata)
    item = ImageLabels(record)
    report.images += 1
    if lf is None:
        return item
    report.labeled += 1
    if lf.width and lf.height and (lf.width, lf.height) != (info.width, info.height):
        report.add(lf.source, f"declares image size {lf.width}x{lf.height} but {src.path} "
                   f"is {info.width}x{info.height}; boxes were checked against the real size",
                   "fix <size> in the label file (or re-export it for this image)")
    annotations = lf.annotations
    if src.oriented is not None:
        annotations = _merge_oriented(annotations, src.oriented, report)
    _add_objects(item, annotations, lf, data, report)
    for region in lf.ignore:
        item.ignore.append(region)
    item.clicks.extend(lf.clicks)
    report.annotations += len(item.annotations)
    report.ignore_regions += len(item.ignore)
    report.oriented += sum(a.obox is not None for a in item.annotations)
    return item


def _add_objects(item: ImageLabels, annotations: list[Annotation], lf: LabelFile,
                 data: DataParams, report: ImportReport) -> None:
    """Ignore classes -> ignore regions; known classes -> checked annotations."""
    rec = item.image
    unknown: dict[str, int] = {}
    for index, ann in enumerate(annotations, start=1):
        if ann.category not in data.classes and ann.category not in data.ignore_classes:
            unknown[ann.category] = unknown.get(ann.category, 0) + 1
            continue
        problem = ann.box.problem(rec.width, rec.height, data.box_tolerance)
        if problem:
            report.add(lf.source, f"object {index} ({ann.category}): {problem}; left out",
                       "fix or delete the box in the label file")
            continue
        box = ann.box.clip(rec.width, rec.height)
        if ann.category in data.ignore_classes:
            item.ignore.append(IgnoreRegion(box, ann.obox, ann.category))
        else:
            item.annotations.append(replace(ann, box=box))
    for name, n in unknown.items():
        report.add(lf.source, f"unknown class {name!r} ({n} object(s)); left out",
                   f"add {name!r} to data.classes (or data.ignore_classes) in params.yaml, "
                   f"or rename it; known classes: {', '.join(data.classes)}")


def _merge_oriented(axis: list[Annotation], oriented: LabelFile,
                    report: ImportReport) -> list[Annotation]:
    """Give each axis-aligned object its oriented box from the roLabelImg file.

    Pair by order + class first: HIT-UAV's roLabelImg files list the same objects in the
    same order as its VOC files, and order is exact where IoU is not (people a few pixels
    apart overlap several candidate boxes). Only when the lists disagree (different counts
    or classes, or a pair that does not overlap) fall back to greedy best-IoU matching
    within each class.
    """
    rot = oriented.annotations
    if len(rot) == len(axis) and all(
            a.category == o.category and a.box.iou(o.box) >= MIN_MATCH_IOU
            for a, o in zip(axis, rot)):
        return [replace(a, obox=o.obox) for a, o in zip(axis, rot)]
    pairs = sorted(((a.box.iou(o.box), i, j) for i, a in enumerate(axis)
                    for j, o in enumerate(rot) if a.category == o.category), reverse=True)
    match: dict[int, int] = {}
    used: set[int] = set()
    for iou, i, j in pairs:
        if iou < MIN_MATCH_IOU:
            break
        if i not in match and j not in used:
            match[i] = j
            used.add(j)
    unmatched = len(rot) - len(used)
    if unmatched:
        report.add(oriented.source, f"{unmatched} oriented box(es) match no axis-aligned "
                   "box of the same class in the VOC file; left out (their VOC objects "
                   "stay axis-aligned)", "make the VOC and roLabelImg files list the same "
                   "objects")
    return [replace(a, obox=rot[match[i]].obox) if i in match else a
            for i, a in enumerate(axis)]


def _metadata(image_id: str, src: _Source, info: ImageInfo, splits: dict[str, str],
              data: DataParams) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    m = HITUAV_NAME.match(image_id)
    if m:
        meta.update(night=int(m["night"]), altitude_m=int(m["alt"]),
                    camera_angle_deg=int(m["angle"]), frame=int(m["frame"]),
                    flight=f"{m['night']}_{m['alt']}_{m['angle']}_{m['part']}")
    if info.capture_time:
        meta["capture_time"] = info.capture_time
    split = splits.get(image_id) or _split_from_path(src.path, data)
    if split:
        meta["split"] = split
    return meta


def _split_from_path(path: str, data: DataParams) -> str | None:
    """YOLO layout: images/train/x.jpg -> "train"."""
    parts = PurePosixPath(path).parts
    n = len(PurePosixPath(data.images_dir).parts)
    if len(parts) > n + 1 and parts[n] in ("train", "val", "test"):
        return parts[n]
    return None


