"""Import a raw dataset (images + labels in any supported format) into one checked LabelSet.

    labels, report = import_dataset("data/sample/hit-uav", params.data)
    print(report.summary())
    write_pool(labels, report, layout.manifest, layout.ground_truth, layout.import_report)

The import never stops at a bad file: every problem (corrupt or truncated image, missing
image, box with no area inside the image, unknown class, duplicate image id, a label path
escaping the dataset root, unparsable label file or line) becomes a `Problem(file, message,
fix, kind)` in the report, the offending image, object or line is left out, and everything
else is imported. Only a dataset that cannot be read at all (no such directory, YOLO labels
without class names) raises `DatasetError`.

What the import changes but keeps is reported apart (`report.clipped`): a box that overhangs
its image (tiles cut at the border, tools that round outwards) is clipped to the image. An
image of a labelled source that has no label file, or whose label file failed, is
*unlabeled* (`metadata["labeled"] = False` in the manifest), never "labelled with zero
objects": it is left out of ground_truth.json, so neither training, evaluation nor the
simulated annotator takes it for an empty image.

Layout of a dataset root (names from `DataParams`): `images_dir/` holds the images (nested
folders allowed); `labels` is a directory of per-image label files mirroring images_dir
(voc, rolabelimg, yolo, dota) or one JSON file (coco); `split_dir/<split>.txt` lists image
ids per split. The image id is the file stem (HIT-UAV's `0_100_30_0_03281`); paths stored
in ImageRecord are relative to the dataset root.
"""
from __future__ import annotations

import math
import os
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from tinyloop.annotations import (Annotation, AnnotationError, IgnoreRegion, ImageLabels,
                                  ImageRecord, LabelSet)
from tinyloop.atomic import write_json_atomic
from tinyloop.cocofile import write_labels
from tinyloop.config import DataParams
from tinyloop.formats import FormatError, LabelFile
from tinyloop.formats.coco import read_coco
from tinyloop.formats.detect import image_list_paths, is_image_list, looks_like_label_lines
from tinyloop.formats.registry import LabelReader, reader, reader_names
from tinyloop.formats.voc import read_voc
from tinyloop.formats.yolo import YoloNames, find_yolo_names
from tinyloop.hituav import hituav_metadata
from tinyloop.images import (IMAGE_EXTENSIONS, ImageError, ImageInfo, inspect_image,
                             is_image_file)
from tinyloop.progress import bar

MIN_MATCH_IOU = 0.3  # HIT-UAV's VOC and roLabelImg boxes of one object overlap >= 0.70


class DatasetError(ValueError):
    """The dataset as a whole cannot be read (missing root, unknown format)."""


@dataclass(frozen=True)
class Problem:
    file: str      # the file at fault (image, label file, split list)
    message: str   # what is wrong
    fix: str       # what to do about it
    kind: str = "label"  # image | label file | label | class | split | duplicate | path

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
    unlabeled: int = 0          # images of a labelled source without (readable) labels
    problems: list[Problem] = field(default_factory=list)
    clipped: list[Problem] = field(default_factory=list)  # boxes clipped to the image, kept
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, file: str | Path, message: str, fix: str, kind: str = "label") -> None:
        """Record a problem; files inside the dataset are named relative to its root."""
        self.problems.append(Problem(self._name(file), printable(message), printable(fix),
                                     kind))

    def add_clipped(self, file: str | Path, message: str) -> None:
        self.clipped.append(Problem(self._name(file), printable(message), "none needed: "
                                    "the part inside the image was kept", "clipped"))

    def _name(self, file: str | Path) -> str:
        path = Path(file)
        if path.is_absolute() and path.is_relative_to(self.root):
            return printable(path.relative_to(self.root).as_posix())
        return printable(str(file))

    def counts_by_kind(self) -> dict[str, int]:
        return dict(Counter(p.kind for p in self.problems).most_common())

    def summary(self, max_problems: int = 50) -> str:
        lines = [f"imported {self.images} images from {self.root} ({self.format}) in "
                 f"{self.seconds:.1f} s: {self.labeled} with labels, {self.annotations} "
                 f"objects ({self.oriented} oriented), {self.ignore_regions} ignore regions"]
        if self.unlabeled:
            lines.append(f"{self.unlabeled} image(s) have no usable label file: imported as "
                         "unlabeled (not in the ground truth, not taken as empty images)")
        lines += [f"note: {n}" for n in self.notes]
        if self.clipped:
            lines.append(f"{len(self.clipped)} box(es) overhang their image: clipped to it "
                         f"and kept, e.g. {self.clipped[0].file}: {self.clipped[0].message}")
        if self.problems:
            kinds = ", ".join(f"{n} {k}" for k, n in self.counts_by_kind().items())
            lines.append(f"{len(self.problems)} problem(s) ({kinds}); the files, objects or "
                         "lines named were left out:")
            lines += [str(p) for p in self.problems[:max_problems]]
            if len(self.problems) > max_problems:
                lines.append(f"... and {len(self.problems) - max_problems} more (all are in "
                             "the import report JSON)")
        else:
            lines.append("no problems found")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def printable(text: str) -> str:
    """`text` with the bytes of a file name that is not UTF-8 written as \\xNN escapes.

    On Linux such a name (MOS75 + Latin-1 e-acute) reaches Python as a str holding a lone
    surrogate, which no UTF-8 writer (JSON report, terminal) accepts; escaped, the report
    still names the file."""
    if is_utf8(text):
        return text
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _report_undecodable_name(rel: str, report: ImportReport, what: str) -> None:
    """A file whose name is not UTF-8: no labels file can name it, so it is left out and
    people are told how to rename it (the Latin-1 reading is a guess that is usually
    right on old Windows and FAT file systems)."""
    guess = os.fsencode(PurePosixPath(rel).name).decode("latin-1")
    report.add(rel, f"file name is not valid UTF-8; this {what} was left out",
               f"rename it to a UTF-8 name (as Latin-1 it reads {guess!r}); `convmv -f "
               "latin1 -t utf8 -r --notest DIR` renames every such file", kind="file name")


def import_dataset(root: str | os.PathLike, data: DataParams, progress: bool = True,
                   workers: int = 2) -> tuple[LabelSet, ImportReport]:
    """Read and check a whole dataset; see the module docstring. Never raises per file."""
    start = time.perf_counter()
    root = Path(root).resolve()
    if not root.is_dir():
        raise DatasetError(f"{printable(str(root))}: dataset directory not found; set "
                           "data.source in params.yaml (or --source) to the folder holding "
                           "the images")
    if not is_utf8(str(root)):
        raise DatasetError(f"{printable(str(root))}: the dataset path is not valid UTF-8, "
                           "so no labels file can name its images; rename the folders to "
                           "UTF-8 names (`convmv -f latin1 -t utf8 -r --notest DIR`)")
    if data.format not in reader_names():
        raise DatasetError(f"unknown format {data.format!r}; expected one of "
                           f"{reader_names()}")
    report = ImportReport(str(root), data.format)
    if reader(data.format).suffix is None:  # one labels file for the dataset (COCO)
        sources = _coco_sources(root, data, report)
    else:
        yolo = _yolo_names(root, root / data.labels, report) \
            if data.format == "yolo" and (root / data.labels).is_dir() else None
        image_lists: list[Path] = []
        sources = _directory_sources(root, data, report, yolo, image_lists)
    if not sources and not report.problems:
        raise DatasetError(no_images_message(root, data))
    splits = _read_splits(root, data, report, set(sources))
    if data.format == "yolo" and yolo is not None:  # split lists, if any, win
        splits = {**yolo_splits(yolo, sources, root), **splits}
    if data.format != "coco" and image_lists:
        splits = {**image_list_splits(image_lists, sources, root, report), **splits}
    items = _check_images(root, sources, data, splits, report, progress, workers)
    labels = LabelSet(categories=list(data.classes), images=items,
                      info={"dataset_root": str(root), "source_format": data.format})
    report.seconds = time.perf_counter() - start
    return labels, report


def nothing_imported(report: ImportReport) -> str | None:
    """Why no pool may be written from this import (every image was left out: an empty
    pool only fails later, in the features step), or None."""
    if report.images:
        return None
    return (f"no image of {report.root} could be imported: all were left out for the "
            f"{len(report.problems)} problem(s) above; nothing written (--keep-going "
            "imports the rest, but there is no rest)")


def write_pool(labels: LabelSet, report: ImportReport, manifest: str | os.PathLike,
               ground_truth: str | os.PathLike,
               report_path: str | os.PathLike | None = None) -> list[Path]:
    """Write the manifest (images only), the ground truth (the labelled images, when the
    source has labels) and the report, each atomically; returns the files written."""
    images_only = replace(labels, images=[ImageLabels(item.image) for item in labels.images])
    written = [write_labels(images_only, manifest)]
    if report.has_labels:
        written.append(write_labels(labelled_only(labels), ground_truth))
    if report_path is not None:
        written.append(write_json_atomic(report_path, report.to_json()))
    return written


def is_labelled(item: ImageLabels) -> bool:
    """False for an image the import marked unlabeled (see the module docstring)."""
    return item.image.metadata.get("labeled", True) is not False


def labelled_only(labels: LabelSet) -> LabelSet:
    return replace(labels, images=[i for i in labels.images if is_labelled(i)])


# --- finding images and their label files ------------------------------------------------

@dataclass
class _Source:
    """One image to import: its path (relative to root) and its label file, if any."""
    path: str
    labels: LabelFile | None = None
    label_path: Path | None = None   # for formats parsed once the image size is known
    oriented: LabelFile | None = None


def no_images_message(root: Path, data: DataParams) -> str:
    """Why an import found no image at all: where it looked, and what the folder looks like
    instead (a dataset that imports nothing must stop here, not in the features step)."""
    if reader(data.format).suffix is None:
        where = (f"the COCO file {data.labels} lists no images (its \"images\" list is "
                 "empty)")
    else:
        where = (f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under "
                 f"{data.images_dir}/, with {data.format} labels in {data.labels}/")
    return f"{printable(str(root))}: no images to import: format {data.format}, {where}; " \
        + _layout_hint(root, data)


def _layout_hint(root: Path, data: DataParams) -> str:
    """What `detect_layout` finds in the folder, as the params that would import it."""
    from tinyloop.formats.detect import detect_layout
    found = detect_layout(root)
    if found is None or not found.images:
        return ("point data.source at the folder that holds the images (and "
                "data.images_dir at its images sub-folder)")
    # the folders only: a missing split_dir or oriented_labels folder is merely unused
    changes = {k: v for k, v in found.data_params().items()
               if k in ("format", "images_dir", "labels") and getattr(data, k, None) != v}
    if not changes:
        return "check data.images_dir and data.labels in params.yaml"
    return (f"this folder looks like {found.describe()}; set "
            + ", ".join(f"data.{k}: {v}" for k, v in changes.items())
            + " in params.yaml (`tinyloop init --source DIR` writes them)")


def _directory_sources(root: Path, data: DataParams, report: ImportReport,
                       yolo: YoloNames | None, image_lists: list[Path]) -> dict[str, _Source]:
    """Images under images_dir and their label files; label-folder files that list image
    paths (darknet's train.txt) are split lists, put in `image_lists`."""
    images_dir = root / data.images_dir
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: images directory not found; set data.images_dir "
                           f"(relative to {root}); " + _layout_hint(root, data))
    sources = _index_images(root, images_dir, report)
    labels_dir = root / data.labels
    if not labels_dir.is_dir():
        report.notes.append(f"no labels directory {labels_dir}: imported the images "
                            "unlabeled (set data.labels if they do have labels)")
        return sources
    report.has_labels = True
    by_rel = {_rel_key(root / s.path, images_dir): i for i, s in sources.items()}
    fmt = reader(data.format)
    suffix = fmt.suffix
    yolo_names = yolo.names if yolo is not None else None
    oriented_dir = root / data.oriented_labels if data.format == "voc" and \
        data.oriented_labels else None
    if oriented_dir is not None and not oriented_dir.is_dir():
        report.notes.append(f"no oriented labels directory {oriented_dir}: boxes are "
                            "axis-aligned only")
        oriented_dir = None
    claimed: dict[str, Path] = {}
    for label_path in sorted(labels_dir.rglob(f"*{suffix}")):
        if _not_a_label_file(label_path):
            continue
        rel = label_path.relative_to(root).as_posix()
        if not is_utf8(rel):
            _report_undecodable_name(rel, report, "label file")
            continue
        # a file named after an image is its label file: only the others are read twice
        if suffix == ".txt" and label_path.stem not in sources and is_image_list(label_path):
            image_lists.append(label_path)
            continue
        try:
            lf = _read_label_file(fmt, label_path)
        except FormatError as e:
            report.add(e.file, e.message, e.fix or "fix or re-export the label file",
                       kind="label file")
            continue
        except Exception as e:  # noqa: BLE001 - one odd file must not stop the import
            report.add(label_path, f"cannot read label file ({type(e).__name__}: {e})",
                       "fix or re-export the label file", kind="label file")
            continue
        image_id = _resolve_image(lf, label_path, labels_dir, images_dir, root, by_rel,
                                  sources, report)
        if image_id is None:
            continue
        if image_id in claimed:
            report.add(label_path, f"duplicate labels for image id {image_id!r}: "
                       f"{claimed[image_id]} labels it already; this file was left out",
                       "keep one label file per image", kind="duplicate")
            continue
        claimed[image_id] = label_path
        src = sources[image_id]
        if fmt.read_sized is not None:  # read once the image size is known
            src.label_path = label_path
            src.labels = LabelFile(source=label_path, metadata={"yolo_names": yolo_names})
        else:
            src.labels = lf
        if oriented_dir is not None:
            src.oriented = _read_oriented(oriented_dir / label_path.relative_to(labels_dir),
                                          report)
    return sources


def _not_a_label_file(path: Path) -> bool:
    """classes.txt and READMEs (Roboflow writes README.dataset.txt) sit among label files."""
    return path.name == "classes.txt" or path.name.lower().startswith("readme") or \
        not path.is_file()


def _yolo_names(root: Path, labels_dir: Path, report: ImportReport) -> YoloNames:
    """The class names the YOLO dataset states (classes.txt, data.yaml, *.names); never
    params' classes: index 0 of someone else's dataset is not our first class."""
    try:
        found = find_yolo_names(labels_dir, root)
    except FormatError as e:
        raise DatasetError(str(e)) from None
    if found is None:
        raise DatasetError(
            f"{labels_dir}: YOLO labels but no class names: write classes.txt (one name per "
            "line, line 1 = class 0) next to the labels, or a data.yaml with `names:`, "
            f"or a *.names file, in {labels_dir} or above it up to {root}")
    source = found.source.relative_to(root) if found.source.is_relative_to(root) \
        else found.source
    report.notes.append(f"class names from {source}: {', '.join(found.names)}")
    return found


def yolo_splits(found: YoloNames, sources: dict[str, "_Source"], root: Path) -> dict[str, str]:
    """id -> split for images under the train:/val:/test: directories of a data.yaml (or
    listed in the image-list file such a key names)."""
    splits = {}
    for split, places in found.split_dirs.items():
        for place in places:
            if place.is_file():
                listed = {(place.parent / line).resolve() for line in
                          image_list_paths(place)}
                inside = lambda path: path in listed  # noqa: E731
            else:
                inside = lambda path, d=place.resolve(): path.is_relative_to(d)  # noqa: E731
            for image_id, src in sources.items():
                if inside((root / src.path).resolve()):
                    splits.setdefault(image_id, split)
    return splits


# darknet names its lists train.txt / valid.txt / test.txt
LIST_SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test"}


def image_list_splits(lists: list[Path], sources: dict[str, "_Source"], root: Path,
                      report: ImportReport) -> dict[str, str]:
    """id -> split from the darknet split lists found among the label files (one image
    path per line). A list not named after a split is noted and not used; listed images
    that are not in the dataset are one problem per list (the list itself is kept)."""
    by_path = {(root / s.path).resolve(): i for i, s in sources.items()}
    # lists written on another machine hold its absolute paths: the file name still tells
    names = Counter(PurePosixPath(s.path).name for s in sources.values())
    by_name = {PurePosixPath(s.path).name: i for i, s in sources.items()
               if names[PurePosixPath(s.path).name] == 1}
    splits: dict[str, str] = {}
    for path in lists:
        rel = path.relative_to(root).as_posix()
        split = LIST_SPLITS.get(path.stem.lower())
        if split is None:
            report.notes.append(f"{rel} lists image paths but is not named after a split "
                                f"({', '.join(LIST_SPLITS)}); not used")
            continue
        missing = []
        for line in image_list_paths(path):
            image_id = by_path.get(_listed_path(line, path, root)) or \
                by_name.get(PurePosixPath(line.replace("\\", "/")).name)
            if image_id is None:
                missing.append(line)
            elif splits.setdefault(image_id, split) != split:
                report.add(path, f"image {image_id!r} is in both {splits[image_id]!r} and "
                           f"{split!r}", "list every image in one split only", kind="split")
        report.notes.append(f"split list {rel}: images listed there are {split!r}")
        if missing:
            report.add(path, f"split list: {len(missing)} listed image(s) not found: "
                       f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}",
                       "fix those lines (paths relative to the dataset root or to the list) "
                       "or add the images; the list itself is not a label file: keep it",
                       kind="missing image")
    return splits


def _listed_path(line: str, list_path: Path, root: Path) -> Path:
    """Where a split list's line points: absolute, else relative to the dataset root
    (darknet's habit), else relative to the list's folder."""
    listed = Path(line)
    if listed.is_absolute():
        return listed.resolve()
    for base in (root, list_path.parent):
        if (base / listed).exists():
            return (base / listed).resolve()
    return (root / listed).resolve()


def _read_label_file(fmt: LabelReader, path: Path) -> LabelFile:
    """The file read now; only its path for a format read once the image size is known."""
    return fmt.read(path) if fmt.read is not None else LabelFile(source=path)


def _read_oriented(path: Path, report: ImportReport) -> LabelFile | None:
    if not path.is_file():
        return None
    try:
        return read_voc(path)
    except FormatError as e:
        report.add(e.file, e.message, e.fix or "fix or re-export the label file", kind="label file")
        return None


def _index_images(root: Path, images_dir: Path, report: ImportReport) -> dict[str, _Source]:
    """Every image under images_dir by id (file stem); a second file with a taken id is
    reported and left out."""
    sources: dict[str, _Source] = {}
    for path in sorted(p for p in images_dir.rglob("*") if is_image_file(p)):
        rel = path.relative_to(root).as_posix()
        if not is_utf8(rel):
            _report_undecodable_name(rel, report, "image")
            continue
        image_id = path.stem
        if image_id in sources:
            report.add(rel, f"duplicate image id {image_id!r}: {sources[image_id].path} "
                       "has the same file name stem; this image was left out",
                       "rename one of the files (ids are file names without extension)",
                       kind="duplicate")
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
                   "(no absolute paths, no '..')", kind="path")
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
    if label_path.suffix == ".txt" and not looks_like_label_lines(label_path):
        report.notes.append(f"{label_path.relative_to(root)}: no image {expected} and no "
                            "line reads as a label: not a label file, skipped")
        return None
    report.add(label_path, f"missing image file: no image {expected} for this label file; "
               "its labels were left out",
               "add the image, or delete the label file if the image is gone", kind="missing image")
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
        report.add(e.file, e.message, e.fix,
                   kind="unknown key" if e.message.startswith("unknown key") else "label")
    report.has_labels = True
    sources: dict[str, _Source] = {}
    for lf in files:
        ref = str(lf.image_ref)
        if escapes_root(ref):
            report.add(coco_path, f"image file_name {ref!r} escapes the dataset root {root}; "
                       "this image was left out",
                       "write file_name relative to the dataset root (no absolute paths, "
                       "no '..')", kind="path")
            continue
        candidates = [root / ref, root / data.images_dir / ref]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            report.add(coco_path, f"missing image file {ref!r} (looked in {root} and "
                       f"{root / data.images_dir}); its labels were left out",
                       "add the image, or remove its entry from the COCO file",
                       kind="missing image")
            continue
        image_id = lf.image_id or found.stem
        if image_id in sources:
            report.add(coco_path, f"duplicate image id {image_id!r}: {ref!r} and "
                       f"{sources[image_id].path!r}; the second was left out",
                       "give every image its own file name stem (or tinyloop id)", kind="duplicate")
            continue
        sources[image_id] = _Source(found.relative_to(root).as_posix(), labels=lf)
    return sources


VOC_UNION = "trainval"  # VOC's train + val list: not a split of its own
SPLIT_NAMES = ("train", "val", "test", VOC_UNION)


def _read_splits(root: Path, data: DataParams, report: ImportReport,
                 ids: set[str]) -> dict[str, str]:
    """id -> split from split_dir/<split>.txt (one id per line).

    The VOC layout is the normal case: train.txt, val.txt, test.txt and trainval.txt, which
    repeats train + val. An id only trainval lists is imported as "train" (a held-out split
    must be chosen on purpose); per-class lists (car_train.txt: "id 1") are not splits.
    """
    if not data.split_dir or not (root / data.split_dir).is_dir():
        return {}
    lists = _split_lists(root / data.split_dir, report)
    splits: dict[str, str] = {}
    for name, (path, listed) in lists.items():
        if name == VOC_UNION:
            continue
        for image_id in listed:
            if image_id in splits and splits[image_id] != name:
                report.add(path, f"image {image_id!r} is in both {splits[image_id]!r} and "
                           f"{name!r}", "list every image in one split only", kind="split")
                continue
            splits[image_id] = name
    if VOC_UNION in lists:
        _merge_trainval(*lists[VOC_UNION], splits, report)
    for name, (path, listed) in lists.items():
        missing = [i for i in listed if i not in ids]
        if missing:
            report.add(path, f"missing image file(s): {len(missing)} listed id(s) have no "
                       f"image: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}",
                       "add the images or delete the ids from the list", kind="missing image")
    return splits


def _split_lists(split_dir: Path, report: ImportReport) -> dict[str, tuple[Path, list[str]]]:
    """split name -> (its list file, the ids it lists, in order, without repeats)."""
    lists, per_class = {}, []
    for path in sorted(split_dir.glob("*.txt")):
        name = path.stem
        if "_" in name and name.rsplit("_", 1)[1] in SPLIT_NAMES:
            per_class.append(path.name)
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            report.add(path, f"split list is not UTF-8 text ({e}); not used",
                       "save it as UTF-8 (ids are file name stems)", kind="split")
            continue
        rows = [line.split() for line in text.splitlines()]
        lists[name] = (path, list(dict.fromkeys(row[0] for row in rows if row)))
    if per_class:
        report.notes.append(f"{len(per_class)} per-class list(s) in {split_dir.name}/ "
                            f"({per_class[0]} ...) are not splits; not used")
    return lists


def _merge_trainval(path: Path, listed: list[str], splits: dict[str, str],
                    report: ImportReport) -> None:
    """trainval = train + val: ids it adds become "train"; a listed test image is a
    conflict (trainval and test are disjoint)."""
    extra = [i for i in listed if i not in splits]
    for image_id in listed:
        if splits.get(image_id) == "test":
            report.add(path, f"image {image_id!r} is in both 'trainval' and 'test'",
                       "list every image in one split only", kind="split")
    for image_id in extra:
        splits[image_id] = "train"
    if extra:
        report.notes.append(f"{len(extra)} image(s) listed only in {path.name} (train + val)"
                            " were imported as 'train'")


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
        for image_id, info in bar(zip(ids, results), total=len(ids), unit="img",
                                  desc="checking images", enabled=progress):
            src = sources[image_id]
            if isinstance(info, ImageError):
                report.add(src.path, f"{info.reason}; the image and its labels were "
                           "left out", info.fix, kind="image")
                continue
            items.append(_image_labels(image_id, src, info, data, splits, report))
    return items


def _image_labels(image_id: str, src: _Source, info: ImageInfo, data: DataParams,
                  splits: dict[str, str], report: ImportReport) -> ImageLabels:
    metadata = _metadata(image_id, src, info, splits, data)
    lf = src.labels
    if src.label_path is not None:  # normalised (YOLO): read now the size is known
        try:
            lf = reader(data.format).read_sized(src.label_path, lf.metadata, info.width,
                                                info.height)
        except FormatError as e:
            report.add(e.file, e.message + "; its labels were left out", e.fix, kind="label file")
            lf = None
        except Exception as e:  # noqa: BLE001 - one odd file must not stop the import
            report.add(src.label_path, f"cannot read label file ({type(e).__name__}: {e}); "
                       "its labels were left out", "fix or re-export the label file",
                       kind="label file")
            lf = None
    if lf is not None and lf.metadata:
        metadata.update(lf.metadata)
    record = ImageRecord(id=image_id, path=src.path, width=info.width, height=info.height,
                         channels=info.channels, metadata=metadata)
    item = ImageLabels(record)
    report.images += 1
    if lf is None:
        if report.has_labels:
            record.metadata["labeled"] = False
            report.unlabeled += 1
        return item
    report.labeled += 1
    for e in lf.problems:
        report.add(e.file, e.message, e.fix or "fix or delete the line", kind="label line")
    if lf.width and lf.height and (lf.width, lf.height) != (info.width, info.height):
        report.add(lf.source, f"declares image size {lf.width}x{lf.height} but {src.path} "
                   f"is {info.width}x{info.height}; boxes were checked against the real size",
                   "fix <size> in the label file (or re-export it for this image)", kind="label")
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
    unknown: dict[str, list[str]] = {}
    for index, ann in enumerate(annotations, start=1):
        stated = _as_written(ann, index, lf)
        if ann.category not in data.classes and ann.category not in data.ignore_classes:
            unknown.setdefault(ann.category, []).append(stated)
            continue
        box = _checked_box(ann, stated, rec, lf.source, data, report)
        if box is None:
            continue
        if ann.category in data.ignore_classes:
            item.ignore.append(IgnoreRegion(box, ann.obox, ann.category,
                                            polygon=ann.polygon))
        else:
            item.annotations.append(replace(ann, box=box))
    for name, objects in unknown.items():
        which = f": {', '.join(objects[:3])}{' ...' if len(objects) > 3 else ''}" \
            if lf.object_names else ""
        report.add(lf.source, f"unknown class {name!r} ({len(objects)} object(s){which}); "
                   "left out",
                   f"add {name!r} to data.classes (or data.ignore_classes) in params.yaml, "
                   f"or rename it; known classes: {', '.join(data.classes)}", kind="class")


def _as_written(ann: Annotation, index: int, lf: LabelFile) -> str:
    """The object and its box as its label file names them: "object 2 (Car): box [x1, y1,
    x2, y2]", or the reader's own words (COCO: image file name, annotation id, bbox)."""
    if index <= len(lf.object_names):
        return lf.object_names[index - 1]
    return f"object {index} ({ann.category}): box {ann.box.xyxy()}"


def _checked_box(ann: Annotation, stated: str, rec: ImageRecord, source: Path,
                 data: DataParams, report: ImportReport):
    """The object's box clipped to its image, or None (problem reported); `stated` names
    the object and its box for the messages (`_as_written`).

    With data.clip_boxes a box that overhangs by any amount is clipped and the change
    reported; only a box with no area inside the image is dropped. Without it (strict)
    an overhang over data.box_tolerance px is a problem.
    """
    tolerance = math.inf if data.clip_boxes else data.box_tolerance
    defect = ann.box.defect(rec.width, rec.height, tolerance)
    box = None if defect else ann.box.clip(rec.width, rec.height)
    if box is not None and (box.width <= 0 or box.height <= 0):
        defect = f"lies outside the {rec.width}x{rec.height} image"
    if defect:
        report.add(source, f"{stated} {defect}; left out",
                   "fix or delete the box in the label file", kind="box")
        return None
    if box != ann.box:
        overhang = max(-ann.box.x1, -ann.box.y1, ann.box.x2 - rec.width,
                       ann.box.y2 - rec.height)
        report.add_clipped(source, f"{stated} overhangs the {rec.width}x{rec.height} image "
                           f"by {overhang:g} px; clipped")
    return box


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
                   "objects", kind="label")
    return [replace(a, obox=rot[match[i]].obox) if i in match else a
            for i, a in enumerate(axis)]


def _metadata(image_id: str, src: _Source, info: ImageInfo, splits: dict[str, str],
              data: DataParams) -> dict[str, Any]:
    meta: dict[str, Any] = dict(hituav_metadata(image_id) or {})
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


