"""Helpers for the formats and ingest tests: locate HIT-UAV, build tiny datasets on disk."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from tinyloop.config import DataParams

FIXTURES = Path(__file__).parent / "fixtures"


def hituav_root() -> Path:
    """The real HIT-UAV subset: $TINYLOOP_HITUAV or ../shared/datasets/hit-uav."""
    env = os.environ.get("TINYLOOP_HITUAV")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared/datasets/hit-uav"
    if not (root / "images").is_dir():
        pytest.skip(f"HIT-UAV not found at {root}; set TINYLOOP_HITUAV")
    return root


def write_image(path: Path, size=(64, 48), mode="L", fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 128).save(path, fmt)
    return path


def voc_object(name: str, x1, y1, x2, y2, difficult=0) -> str:
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
            f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
            "</bndbox></object>")


def write_voc(path: Path, filename: str, objects: list[str], size=(64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><filename>{filename}</filename><size><width>{size[0]}"
                    f"</width><height>{size[1]}</height><depth>1</depth></size>"
                    + "".join(objects) + "</annotation>")
    return path


def tiny_voc_params(**kw) -> DataParams:
    base = dict(classes=["Person", "Car"], ignore_classes=["DontCare"],
                oriented_labels=None, split_dir=None)
    base.update(kw)
    return DataParams(**base)
