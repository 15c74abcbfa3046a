"""YOLO txt labels and the ultralytics dataset layout.

One `<image stem>.txt` per image, one object per line, coordinates **normalised** by the image
width and height (0..1), class as a 0-based index into the class names:

- `class cx cy w h`                   axis-aligned box (centre and size)
- `class cx cy w h score`             the same with a model score (prediction files)
- `class x1 y1 x2 y2 x3 y3 x4 y4`     oriented box, YOLO-OBB (ultralytics) corner points

Class names come from `classes.txt` (one per line, line number = index) or from a
`data.yaml` `names:` list or mapping. Numbers are written with 6 decimals (ultralytics'
precision): a round trip moves a box by at most 0.5e-6 x image size. Names listed in
`data.ignore_classes` (DontCare) become ignore regions on import; plain export appends the
ignore categories after the real classes so the file reads back losslessly.

`export_yolo_dataset` writes what ultralytics trains on: images/{train,val}/,
labels/{train,val}/ and data.yaml. YOLO has no ignore regions, so they are left out of the
labels there and (by default) masked in the images instead: filled with the image's mean
grey, so the detector is neither rewarded nor punished there.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from tinyloop.annotations import (Annotation, Box, ImageLabels, LabelSet, OrientedBox,
                                  Provenance)
from tinyloop.atomic import write_text_atomic
from tinyloop.formats import (FormatError, LabelFile, corners_box, label_name,
                              read_label_lines)

DECIMALS = 6


def read_yolo(path: str | os.PathLike, names: list[str], width: int,
              height: int) -> LabelFile:
    """Parse one YOLO txt file of an image of width x height pixels."""
    path = Path(path)
    out = LabelFile(source=path)
    for number, line in enumerate(read_label_lines(path), start=1):
        tokens = line.split("#", 1)[0].split()
        if tokens:
            out.annotations.append(_parse_line(tokens, names, width, height, path, number))
    return out


def _parse_line(tokens: list[str], names: list[str], width: int, height: int, path: Path,
                number: int) -> Annotation:
    where = f"line {number}"
    if len(tokens) not in (5, 6, 9):
        raise FormatError(path, f"{where}: {len(tokens)} values; expected 'class cx cy w h' "
                          "(5), with a score (6) or 'class x1 y1 ... x4 y4' (9)",
                          "fix or delete the line")
    try:
        index = int(tokens[0])
        vals = [float(t) for t in tokens[1:]]
    except ValueError:
        raise FormatError(path, f"{where}: {' '.join(tokens)!r} is not numbers",
                          "fix or delete the line") from None
    if not 0 <= index < len(names):
        raise FormatError(path, f"{where}: class index {index} but only {len(names)} "
                          f"class names are known ({', '.join(names)})",
                          "add the missing names to classes.txt (or data.yaml names)")
    if len(tokens) == 9:
        pts = [(vals[i] * width, vals[i + 1] * height) for i in range(0, 8, 2)]
        return Annotation(names[index], corners_box(pts), OrientedBox.from_corners(pts))
    cx, cy, w, h = vals[0] * width, vals[1] * height, vals[2] * width, vals[3] * height
    box = Box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    if len(tokens) == 6:
        return Annotation(names[index], box, provenance=Provenance("model", score=vals[4]))
    return Annotation(names[index], box)


def read_yolo_names(*dirs: str | os.PathLike) -> list[str] | None:
    """Class names from the first classes.txt / data.yaml found in `dirs`, else None."""
    for d in dirs:
        d = Path(d)
        if (d / "classes.txt").is_file():
            text = (d / "classes.txt").read_text(encoding="utf-8")
            return [line.strip() for line in text.splitlines() if line.strip()]
        for name in ("data.yaml", "dataset.yaml"):
            if (d / name).is_file():
                names = (yaml.safe_load((d / name).read_text(encoding="utf-8")) or {}) \
                    .get("names")
                if isinstance(names, dict):
                    return [names[k] for k in sorted(names)]
                if isinstance(names, list):
                    return [str(n) for n in names]
    return None


def yolo_lines(item: ImageLabels, class_index: dict[str, int], include_ignore: bool = True,
               oriented: bool = False) -> str:
    """The txt content for one image; ignore regions use their category's index."""
    rec = item.image
    objects = [(a.category, a.box, a.obox, a.provenance.score) for a in item.annotations]
    if include_ignore:
        objects += [(r.category, r.box, r.obox, None) for r in item.ignore]
    lines = []
    for category, box, obox, score in objects:
        if oriented:
            pts = obox.corners() if obox is not None else \
                [(box.x1, box.y1), (box.x2, box.y1), (box.x2, box.y2), (box.x1, box.y2)]
            vals = [v for x, y in pts for v in (x / rec.width, y / rec.height)]
        else:
            cx, cy = box.center
            vals = [cx / rec.width, cy / rec.height, box.width / rec.width,
                    box.height / rec.height]
            if score is not None:
                vals.append(score)
        lines.append(" ".join([str(class_index[category])] +
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
    symlink (copy=True copies), named `<image id><suffix>` so ultralytics finds
    labels/<split>/<image id>.txt. Images with ignore regions are written as masked copies
    when mask_ignore is True. When no image is in "val", val points at the train images.
    """
    image_root, out_dir = Path(image_root).resolve(), Path(out_dir).resolve()
    index = {n: i for i, n in enumerate(labels.categories)}
    splits: set[str] = set()
    for item in labels.images:
        split = str(item.image.metadata.get("split", "train"))
        splits.add(split)
        src = image_root / item.image.path
        dst = out_dir / "images" / split / (item.id + Path(item.image.path).suffix)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists() or dst.is_symlink():
            dst.unlink()
        if mask_ignore and item.ignore:
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


def _write_masked(src: Path, dst: Path, boxes: list[Box]) -> None:
    """Copy of the image with the boxes filled with its mean colour."""
    from PIL import Image, ImageDraw, ImageStat
    with Image.open(src) as im:
        im.load()
        fill = tuple(int(round(v)) for v in ImageStat.Stat(im).mean)
        fill = fill[0] if len(fill) == 1 else fill
        draw = ImageDraw.Draw(im)
        for b in boxes:
            draw.rectangle(b.xyxy(), fill=fill)
        im.save(dst)
