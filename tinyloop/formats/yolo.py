"""YOLO txt labels and the ultralytics dataset layout.

One `<image stem>.txt` per image, one object per line, coordinates **normalised** by the image
width and height (0..1), class as a 0-based index into the class names:

- `class cx cy w h`                   axis-aligned box (centre and size)
- `class cx cy w h score`             the same with a model score (prediction files)
- `class x1 y1 x2 y2 x3 y3 x4 y4`     oriented box, YOLO-OBB (ultralytics) corner points

A line that cannot be used costs that object only: it becomes one entry of
`LabelFile.problems` (file, line number, fix). A YOLO-OBB line keeps its four points as
`Annotation.polygon`; export with oriented=True (format "yolo-obb") writes them back.

Class names (`find_yolo_names`): `classes.txt` (one per line, line number = index), else a
yaml with `names:` (ultralytics data.yaml / dataset.yaml / coco8.yaml ...; a list or an
{index: name} mapping), else a darknet `*.names` file; looked for in the labels directory,
the directories above it up to the dataset root, and the root. An ultralytics yaml also
gives the split directories (`train:` / `val:` / `test:`). Numbers are written with 6
decimals (ultralytics' precision): a round trip moves a box by at most 0.5e-6 x image size.
Names listed in `data.ignore_classes` (DontCare) become ignore regions on import; plain
export appends the ignore categories after the real classes so the file reads back
losslessly.

`export_yolo_dataset` writes what ultralytics trains on: images/{train,val}/,
labels/{train,val}/ and data.yaml. YOLO has no ignore regions, so they are left out of the
labels there and (by default) masked in the images instead: filled with the image's mean
grey, so the detector is neither rewarded nor punished there. An image that needs no mask is
linked (or copied) byte for byte; a masked one is written losslessly, as PNG when its source
is lossy (a JPEG saved again loses detail everywhere, not only under the mask).
"""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tinyloop.annotations import (Annotation, Box, ImageLabels, LabelSet, OrientedBox,
                                  Provenance)
from tinyloop.atomic import write_text_atomic
from tinyloop.formats import (FormatError, LabelFile, corners_box, label_name,
                              oriented_box, read_label_lines)
from tinyloop.formats.registry import (LabelReader, LabelWriter, register_reader,
                                        register_writer, written_to)

DECIMALS = 6


def read_yolo(path: str | os.PathLike, names: list[str], width: int,
              height: int) -> LabelFile:
    """Parse one YOLO txt file of an image of width x height pixels.

    A line that cannot be used (wrong number of values, not numbers, unknown class index,
    corner points enclosing no area) becomes one entry of `problems` and costs that object
    only; FormatError is raised only when the file cannot be read at all.
    """
    path = Path(path)
    out = LabelFile(source=path)
    for number, line in enumerate(read_label_lines(path), start=1):
        tokens = line.split("#", 1)[0].split()
        if not tokens:
            continue
        try:
            out.annotations.append(_parse_line(tokens, names, width, height, path, number))
        except FormatError as e:
            out.problems.append(e)
    return out


def _parse_line(tokens: list[str], names: list[str], width: int, height: int, path: Path,
                number: int) -> Annotation:
    where = f"line {number}"
    if len(tokens) not in (5, 6, 9):
        raise FormatError(path, f"{where}: {len(tokens)} values; expected 'class cx cy w h' "
                          "(5), with a score (6) or 'class x1 y1 ... x4 y4' (9); left out",
                          "fix or delete the line")
    try:
        index = int(tokens[0])
        vals = [float(t) for t in tokens[1:]]
    except ValueError:
        raise FormatError(path, f"{where}: {' '.join(tokens)!r} is not numbers; left out",
                          "fix or delete the line") from None
    if not all(math.isfinite(v) for v in vals):
        raise FormatError(path, f"{where}: {' '.join(tokens)!r} has a non-finite number; "
                          "left out", "fix or delete the line")
    if not 0 <= index < len(names):
        raise FormatError(path, f"{where}: class index {index} but only {len(names)} "
                          f"class names are known ({', '.join(names)}); left out",
                          "add the missing names to classes.txt (or data.yaml names)")
    if len(tokens) == 9:
        pts = tuple((vals[i] * width, vals[i + 1] * height) for i in range(0, 8, 2))
        return Annotation(names[index], corners_box(pts), oriented_box(pts, path, where),
                          polygon=pts)
    cx, cy, w, h = vals[0] * width, vals[1] * height, vals[2] * width, vals[3] * height
    box = Box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    if len(tokens) == 6:
        return Annotation(names[index], box, provenance=Provenance("model", score=vals[4]))
    return Annotation(names[index], box)


@dataclass
class YoloNames:
    """Class names of a YOLO dataset and where they were found.

    `split_dirs` comes from an ultralytics yaml (`train:` / `val:` / `test:`), resolved to
    directories (or image-list files) on disk; empty for classes.txt and *.names.
    """
    names: list[str]
    source: Path
    split_dirs: dict[str, list[Path]] = field(default_factory=dict)


def find_yolo_names(*dirs: str | os.PathLike) -> YoloNames | None:
    """The class names of a YOLO dataset, or None when no file states them.

    Pass the labels directory first and the dataset root last: the directories searched are
    each one given, plus, between a directory and a later one that contains it, every
    directory in between (labels/train -> labels -> root). classes.txt wins anywhere (the
    innermost first), then a yaml with `names:` (data.yaml, dataset.yaml, then any *.yaml /
    *.yml, by name), then a darknet *.names file. Sources that disagree are not compared:
    the first one found is used. An empty file is passed over; an unreadable classes.txt /
    *.names raises FormatError (a yaml that does not parse is passed over: it may be any
    other yaml, such as params.yaml).
    """
    search = _search_dirs([Path(d).absolute() for d in dirs])
    for finder in (_names_from_classes_txt, _names_from_yaml, _names_from_darknet):
        for d in search:
            found = finder(d)
            if found is not None and found.names:   # an empty file names nothing: go on
                return found
    return None


def read_yolo_names(*dirs: str | os.PathLike) -> list[str] | None:
    """Just the names `find_yolo_names` finds, else None."""
    found = find_yolo_names(*dirs)
    return found.names if found is not None else None


def _search_dirs(dirs: list[Path]) -> list[Path]:
    out: list[Path] = []
    for i, d in enumerate(dirs):
        out.append(d)
        outer = [later for later in dirs[i + 1:] if later in d.parents]
        if outer:   # walk up to the nearest later directory that holds this one
            stop = max(outer, key=lambda p: len(p.parts))
            out += [p for p in d.parents if len(p.parts) > len(stop.parts)]
    return list(dict.fromkeys(out))


def _name_lines(path: Path) -> list[str]:
    """Names one per line; FormatError when unreadable (guessing the classes instead would
    silently relabel every object)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(path, f"cannot read class names ({e})",
                          "save the file as UTF-8 text, one class name per line") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _names_from_classes_txt(d: Path) -> YoloNames | None:
    path = d / "classes.txt"
    return YoloNames(_name_lines(path), path) if path.is_file() else None


def _names_from_darknet(d: Path) -> YoloNames | None:
    for path in sorted(d.glob("*.names")) if d.is_dir() else []:
        if path.is_file():
            return YoloNames(_name_lines(path), path)
    return None


def _names_from_yaml(d: Path) -> YoloNames | None:
    if not d.is_dir():
        return None
    preferred = [d / "data.yaml", d / "dataset.yaml"]
    others = sorted(p for p in [*d.glob("*.yaml"), *d.glob("*.yml")] if p not in preferred)
    for path in [p for p in preferred if p.is_file()] + others:
        doc = _load_yaml(path)
        names = _yaml_names(doc.get("names")) if isinstance(doc, dict) else None
        if names is not None:
            return YoloNames(names, path, _split_dirs(doc, path))
    return None


def _load_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None     # not a dataset yaml (params.yaml, a broken file): look further


def _yaml_names(names) -> list[str] | None:
    """A `names:` list, or an {index: name} mapping (gaps filled with the index itself)."""
    if isinstance(names, list):
        return [str(n) for n in names]
    if isinstance(names, dict):
        try:
            by_index = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            return None
        return [by_index.get(i, str(i)) for i in range(max(by_index, default=-1) + 1)]
    return None


def _split_dirs(doc: dict, yaml_path: Path) -> dict[str, list[Path]]:
    """train / val / test of an ultralytics yaml, resolved against its `path:` (absolute,
    or relative to the yaml's folder), else the yaml's folder."""
    folder = yaml_path.parent
    base = folder / doc["path"] if isinstance(doc.get("path"), str) else folder
    out = {}
    for split in ("train", "val", "test"):
        value = doc.get(split)
        values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        if values:
            out[split] = [_resolve_split(str(v), base, folder) for v in values]
    return out


def _resolve_split(value: str, base: Path, folder: Path) -> Path:
    """The first candidate that exists, else `base / value`.

    Candidates: `base / value`; `folder / value` (a `path:` left from the machine that wrote
    the yaml, e.g. /content/datasets/x from Colab); `folder / value` without leading '../'
    (Roboflow writes `train: ../train/images` though train/ sits beside data.yaml).
    """
    stripped = value
    while stripped.startswith("../"):
        stripped = stripped[3:]
    candidates = [base / value, folder / value, folder / stripped]
    return next((p for p in candidates if p.exists()), candidates[0])


def yolo_lines(item: ImageLabels, class_index: dict[str, int], include_ignore: bool = True,
               oriented: bool = False) -> str:
    """The txt content for one image; ignore regions use their category's index.

    oriented=True writes YOLO-OBB lines `class x1 y1 ... x4 y4` (no score: the format has
    none): the source polygon while it fits, else the oriented box's corners, else the
    axis-aligned box's corners (`Annotation.outline`).
    """
    rec = item.image
    objects: list = list(item.annotations) + (list(item.ignore) if include_ignore else [])
    lines = []
    for obj in objects:
        if oriented:
            vals = [v for x, y in obj.outline() for v in (x / rec.width, y / rec.height)]
        else:
            cx, cy = obj.box.center
            vals = [cx / rec.width, cy / rec.height, obj.box.width / rec.width,
                    obj.box.height / rec.height]
            score = getattr(obj, "score", None)       # ignore regions have none
            if score is not None:
                vals.append(score)
        lines.append(" ".join([str(class_index[obj.category])] +
                              [f"{v:.{DECIMALS}f}" for v in vals]))
    return "".join(line + "\n" for line in lines)


def class_names(labels: LabelSet, include_ignore: bool = True) -> list[str]:
    """The real classes, then (if asked) the ignore categories that occur, sorted."""
    names = list(labels.categories)
    if include_ignore:
        extra = sorted({r.category for im in labels.images for r in im.ignore} - set(names))
        names += extra
    return names


def export_yolo(labels: LabelSet, out_dir: str | os.PathLike, include_ignore: bool = True,
                oriented: bool = False) -> list[Path]:
    """`<image id>.txt` per image plus classes.txt in out_dir; returns the files written."""
    out_dir = Path(out_dir)
    names = class_names(labels, include_ignore)
    index = {n: i for i, n in enumerate(names)}
    written = [write_text_atomic(out_dir / "classes.txt", "".join(n + "\n" for n in names))]
    for item in labels.images:
        written.append(write_text_atomic(out_dir / label_name(item.id, ".txt"),
                                         yolo_lines(item, index, include_ignore, oriented)))
    return written


def export_yolo_dataset(labels: LabelSet, image_root: str | os.PathLike,
                        out_dir: str | os.PathLike, copy: bool = False,
                        mask_ignore: bool = True, oriented: bool = False) -> Path:
    """The ultralytics layout; returns the path of data.yaml.

    Each image goes to images/<split>/ (its `metadata["split"]`, "train" when absent) as a
    symlink (copy=True copies byte for byte), named `<image id><suffix>` so ultralytics
    finds labels/<split>/<image id>.txt. Images with ignore regions are written as masked
    copies when mask_ignore is True, losslessly (`masked_name`: a JPEG becomes a PNG).
    When no image is in "val", val points at the train images.
    """
    image_root, out_dir = Path(image_root).resolve(), Path(out_dir).resolve()
    index = {n: i for i, n in enumerate(labels.categories)}
    splits: set[str] = set()
    for item in labels.images:
        split = str(item.image.metadata.get("split", "train"))
        splits.add(split)
        src = image_root / item.image.path
        masked = mask_ignore and bool(item.ignore)
        name = masked_name(item.id, src) if masked else item.id + src.suffix
        dst = out_dir / "images" / split / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        for old in {dst, dst.with_name(item.id + src.suffix)}:   # an earlier export's
            if old.exists() or old.is_symlink():
                old.unlink()
        if masked:
            _write_masked(src, dst, [r.box for r in item.ignore])
        elif copy:
            shutil.copy2(src, dst)
        else:
            dst.symlink_to(src)
        write_text_atomic(out_dir / "labels" / split / label_name(item.id, ".txt"),
                          yolo_lines(item, index, include_ignore=False, oriented=oriented))
    data = {"path": str(out_dir), "train": "images/train",
            "val": "images/val" if "val" in splits else "images/train",
            "names": {i: n for i, n in enumerate(labels.categories)}}
    if "test" in splits:
        data["test"] = "images/test"
    return write_text_atomic(out_dir / "data.yaml", yaml.safe_dump(data, sort_keys=False))


LOSSLESS_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")


def masked_name(image_id: str, src: Path) -> str:
    """The file name of a masked copy: the source's suffix when that format is lossless,
    else .png (JPEG, WebP: saving them again would change every pixel a little)."""
    suffix = src.suffix.lower()
    return image_id + (src.suffix if suffix in LOSSLESS_SUFFIXES else ".png")


def _write_masked(src: Path, dst: Path, boxes: list[Box]) -> None:
    """Copy of the upright image (boxes are in upright pixels) with the boxes filled with
    its mean colour, saved losslessly (the format `masked_name` chose)."""
    from PIL import ImageDraw, ImageOps, ImageStat
    from tinyloop.images import _pillow_open   # Pillow's own opener (see tinyloop.images)
    with _pillow_open()(src) as opened:
        opened.load()
        im = ImageOps.exif_transpose(opened) or opened
        fill = tuple(int(round(v)) for v in ImageStat.Stat(im).mean)
        fill = fill[0] if len(fill) == 1 else fill
        draw = ImageDraw.Draw(im)
        for b in boxes:
            draw.rectangle(b.xyxy(), fill=fill)
        if dst.suffix == ".png" and im.mode not in PNG_MODES:
            im = im.convert("RGB")              # CMYK / YCbCr JPEGs
        im.save(dst)


def _read_sized(path: Path, metadata: dict, width: int, height: int) -> LabelFile:
    """YOLO lines are normalised: read once the image size is known, with the names ingest
    found for the dataset (metadata["yolo_names"])."""
    return read_yolo(path, metadata["yolo_names"], width, height)


def _write_oriented(labels: LabelSet, out: Path, image_root=None) -> Path:
    export_yolo(labels, out, oriented=True)
    return out


def _write_dataset(labels: LabelSet, out: Path, image_root=None) -> Path:
    root = image_root or labels.info.get("dataset_root")
    if root is None:
        raise ValueError("yolo-dataset export needs the image root (--image-root): the "
                         "labels file does not say where its images are")
    return export_yolo_dataset(labels, root, out)


register_reader(LabelReader("yolo", ".txt", read_sized=_read_sized))
register_writer(LabelWriter("yolo", written_to(export_yolo)))
register_writer(LabelWriter("yolo-obb", _write_oriented))
register_writer(LabelWriter("yolo-dataset", _write_dataset))
