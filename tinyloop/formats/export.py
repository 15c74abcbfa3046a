"""Export a LabelSet to any supported format by name (what `tinyloop export` calls)."""
from __future__ import annotations

import os
from pathlib import Path

from tinyloop.annotations import LabelSet
from tinyloop.formats import EXPORT_FORMATS
from tinyloop.formats.coco import export_coco, export_fiftyone_coco
from tinyloop.formats.dota import export_dota
from tinyloop.formats.rolabelimg import export_rolabelimg
from tinyloop.formats.voc import export_voc
from tinyloop.formats.yolo import export_yolo, export_yolo_dataset


def export_labels(labels: LabelSet, fmt: str, out: str | os.PathLike,
                  image_root: str | os.PathLike | None = None) -> Path:
    """Write `labels` as `fmt` under `out` and return the main file or directory written.

    coco / fiftyone-coco: `out` is a directory and gets labels.json. yolo-obb: YOLO txt
    with four normalised corner points per object, plus classes.txt. yolo-dataset needs
    `image_root` (default: the labels' `info["dataset_root"]`) to link the images.
    """
    out = Path(out)
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of "
                         f"{', '.join(EXPORT_FORMATS)}")
    if fmt == "coco":
        return export_coco(labels, out / "labels.json")
    if fmt == "fiftyone-coco":
        return export_fiftyone_coco(labels, out / "labels.json")
    if fmt == "yolo-dataset":
        root = image_root or labels.info.get("dataset_root")
        if root is None:
            raise ValueError("yolo-dataset export needs the image root (--image-root): the "
                             "labels file does not say where its images are")
        return export_yolo_dataset(labels, root, out)
    if fmt == "yolo-obb":
        export_yolo(labels, out, oriented=True)
        return out
    writer = {"voc": export_voc, "rolabelimg": export_rolabelimg, "yolo": export_yolo,
              "dota": export_dota}[fmt]
    writer(labels, out)
    return out
