"""A LabelSet as the dataset ultralytics trains on (data.yaml + images/ + labels/).

    data_yaml = export_dataset(labels, image_root, out_dir, imgsz=640, oriented=False)

The files are those of `tinyloop.formats.yolo.export_yolo_dataset` (YOLO txt labels, YOLO-OBB
corner lines with oriented=True, ignore regions masked with the image's mean grey since YOLO
has no ignore label). One thing is added for tiny objects: ultralytics resizes every
training image so its long side is `imgsz`, so an image larger than that would shrink its
10-30 px objects. Such images are cut into imgsz x imgsz tiles instead (tinyloop.tiling:
the tile grid's overlap share is the project's tiling.stride / tiling.size; an object cut
by a tile border is kept when tiling.min_visible of it is inside), written as masked PNG
crops, so every object is trained at its native size, as `c3det.yolo.predict` predicts it.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

from tinyloop.annotations import Box, ImageLabels, LabelSet
from tinyloop.config import TilingParams
from tinyloop.formats.yolo import export_yolo_dataset

TILES = "tiles"  # out_dir/tiles/: crops of the images larger than imgsz


def needs_tiles(item: ImageLabels, imgsz: int) -> bool:
    return max(item.image.width, item.image.height) > imgsz


def export_dataset(labels: LabelSet, image_root: str | os.PathLike, out_dir: str | os.PathLike,
                   imgsz: int, oriented: bool = False,
                   tiling: TilingParams | None = None) -> Path:
    """Write the ultralytics dataset of `labels` into `out_dir` (emptied first: the export is
    a pure function of its inputs); returns the path of data.yaml."""
    out_dir = Path(out_dir).resolve()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    whole = [i for i in labels.images if not needs_tiles(i, imgsz)]
    large = [i for i in labels.images if needs_tiles(i, imgsz)]
    tiles = tile_images(large, Path(image_root), out_dir / TILES, imgsz,
                        tiling or TilingParams()) if large else []
    return export_yolo_dataset(replace(labels, images=whole + tiles), image_root, out_dir,
                               oriented=oriented)


def tile_images(items: list[ImageLabels], image_root: Path, tile_dir: Path, imgsz: int,
                tiling: TilingParams) -> list[ImageLabels]:
    """imgsz x imgsz tiles of `items` as PNG crops in `tile_dir` (ignore regions masked),
    returned as ImageLabels whose absolute image paths are the crops."""
    from tinyloop.tiling import tile_label_set
    stride = max(1, imgsz * tiling.stride // tiling.size)   # the project's overlap share
    tile_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for item in items:
        tiles = tile_label_set(LabelSet([], [item]), imgsz, stride, tiling.min_visible)
        with _open_rgb_or_grey(image_root / item.image.path) as im:
            for tile in tiles.images:
                path = tile_dir / f"{tile.id}.png"
                _save_masked_crop(im, Box(*tile.image.metadata["tile"]["window"]),
                                  [r.box for r in tile.ignore], path)
                # masked already: the exporter must not mask (or look for) the region again
                out.append(replace(tile, image=replace(tile.image, path=str(path)), ignore=[]))
    return out


def _open_rgb_or_grey(path: Path):
    from PIL import ImageOps
    from tinyloop.images import _pillow_open   # Pillow's own opener (see tinyloop.images)
    im = _pillow_open()(path)
    im.load()
    return ImageOps.exif_transpose(im) or im


def _save_masked_crop(im, window: Box, ignore: list[Box], path: Path) -> None:
    """The window's pixels with the ignore boxes (tile px) filled with the crop's mean."""
    from PIL import ImageDraw, ImageStat
    crop = im.crop(tuple(int(round(v)) for v in window.xyxy()))
    if ignore:
        fill = tuple(int(round(v)) for v in ImageStat.Stat(crop).mean)
        draw = ImageDraw.Draw(crop)
        for b in ignore:
            draw.rectangle(b.xyxy(), fill=fill[0] if len(fill) == 1 else fill)
    crop.save(path)
