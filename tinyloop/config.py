"""Knobs of the shared core: where the raw data is and how large images are tiled."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tinyloop.formats.registry import reader_names

# the formats ingest reads, from the registry (a registered format is a valid data.format)
InputFormat = Literal[reader_names()]


@dataclass
class DataParams:
    source: str = "data/sample/hit-uav"        # raw dataset root (images/ + labels)
    format: InputFormat = "voc"
    images_dir: str = "images"
    labels: str = "labels"                   # labels dir (VOC/roLabelImg/YOLO/DOTA) or COCO file
    oriented_labels: str | None = "labels_rotated"  # roLabelImg dir merged in as oriented boxes
    classes: list[str] = field(default_factory=lambda: ["Person", "Car", "Bicycle",
                                                        "OtherVehicle"])
    ignore_classes: list[str] = field(default_factory=lambda: ["DontCare"])
    # <split>.txt lists of image ids, when the data has them (VOC: train, val, test, and
    # trainval = train + val; per-class lists such as car_train.txt are skipped)
    split_dir: str | None = "ImageSets/Main"
    # "decode": decode every image at import (catches truncated files, ~1 ms per 640x512
    # JPEG); "header": read sizes only (fast, catches missing/non-image files only)
    verify_images: Literal["decode", "header"] = "decode"
    # a box overhanging its image (tiles cut at the border) is clipped to it and reported;
    # false (strict): an overhang over box_tolerance px is a problem and the box is left out
    clip_boxes: bool = True
    box_tolerance: float = 1.0  # px a box may overhang the image when clip_boxes is false

    def check(self) -> str | None:
        both = set(self.classes) & set(self.ignore_classes)
        if both:
            return f"{sorted(both)} cannot be both a class and an ignore class"
        if not self.classes:
            return "classes: at least one class is needed"
        if self.box_tolerance < 0:
            return f"box_tolerance ({self.box_tolerance}) must be >= 0"
        return None


@dataclass
class TilingParams:
    size: int = 1024          # patch side in px (Tiny-DOTA 1024/512, SODA 800/650)
    stride: int = 512
    min_visible: float = 0.5  # keep an object cut by a tile border when this share is inside
    nms_iou: float = 0.5      # merging tile predictions back
    # merging: drop a prediction cut by an inner tile edge when this share of it lies inside
    # a prediction no tile cut (the truncated copy of that object); plain IoU misses these
    cut_inside: float = 0.8

    def check(self) -> str | None:
        if not 0 < self.stride <= self.size:
            return f"stride ({self.stride}) must be in 1..size ({self.size})"
        if not 0 < self.min_visible <= 1:
            return f"min_visible ({self.min_visible}) must be in (0, 1]"
        if not 0 < self.cut_inside <= 1:
            return f"cut_inside ({self.cut_inside}) must be in (0, 1]"
        return None
