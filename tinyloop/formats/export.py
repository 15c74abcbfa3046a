"""Export a LabelSet to any registered format by name (what `tinyloop data export` calls)."""
from __future__ import annotations

import os
from pathlib import Path

from tinyloop.annotations import LabelSet
from tinyloop.formats.registry import writer


def export_labels(labels: LabelSet, fmt: str, out: str | os.PathLike,
                  image_root: str | os.PathLike | None = None) -> Path:
    """Write `labels` as `fmt` under `out` and return the main file or directory written.

    coco / fiftyone-coco: `out` is a directory and gets labels.json. yolo-obb: YOLO txt
    with four normalised corner points per object, plus classes.txt. yolo-dataset needs
    `image_root` (default: the labels' `info["dataset_root"]`) to link the images.
    """
    return writer(fmt).write(labels, Path(out), image_root)
