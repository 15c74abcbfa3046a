"""tinyloop's labels file: COCO JSON plus documented extensions, lossless round trip.

A plain COCO reader sees an ordinary detection file (images, annotations with `bbox` as
[x, y, w, h], categories). tinyloop adds, and reads back exactly:

- `images[].tinyloop`: {"id": stable string id, "channels": int, "metadata": {...}}
  (COCO's integer `id` is only the file-local join key).
- `annotations[].score`: the model's score, where a model made the box.
- `annotations[].segmentation`: standard COCO `[[x1, y1, ..., x4, y4]]`, written when the
  object came with its own four corner points (DOTA, YOLO-OBB) that still fit its boxes;
  read back as `Annotation.polygon`, so DOTA -> labels file -> DOTA is exact. On read, only
  a one-part four-point polygon is taken; other segmentations are left alone.
- `annotations[].tinyloop`: {"uid": stable box id, "obox": [cx, cy, w, h, angle_rad],
  "provenance": {"source", "model_version", "score", "edited"}, "difficult": bool}
- `ignore_regions`: [{"image_id", "bbox", "obox"?, "segmentation"?, "category"}] - areas to
  ignore in evaluation (HIT-UAV's DontCare); a separate list so plain COCO tools never train
  on them.
- `clicks`: [{"image_id", "x", "y", "category_id", "round", "source"}].
- `info.tinyloop_format`: the version of these extensions (1).

Floats are written with Python's shortest round-trip repr, so write-then-read is lossless.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tinyloop.annotations import (Annotation, AnnotationError, Box, Click, IgnoreRegion,
                                  ImageLabels, ImageRecord, LabelSet, OrientedBox,
                                  Provenance, polygon_fits)
from tinyloop.atomic import write_json_atomic

FORMAT_VERSION = 1


def to_coco(labels: LabelSet) -> dict[str, Any]:
    cat_ids = {name: i + 1 for i, name in enumerate(labels.categories)}
    images, annotations, ignore_regions, clicks = [], [], [], []
    for image_index, item in enumerate(labels.images, start=1):
        rec = item.image
        images.append({"id": image_index, "file_name": rec.path, "width": rec.width,
                       "height": rec.height,
                       "tinyloop": {"id": rec.id, "channels": rec.channels,
                                    "metadata": rec.metadata}})
        for ann in item.annotations:
            annotations.append(_annotation_to_coco(ann, len(annotations) + 1, image_index,
                                                   cat_ids))
        for region in item.ignore:
            r = {"image_id": image_index, "bbox": region.box.xywh(),
                 "category": region.category}
            if region.obox is not None:
                r["obox"] = region.obox.as_list()
            if _kept_polygon(region) is not None:
                r["segmentation"] = _kept_polygon(region)
            ignore_regions.append(r)
        for click in item.clicks:
            clicks.append({"image_id": image_index, "x": click.x, "y": click.y,
                           "category_id": cat_ids[click.category], "round": click.round,
                           "source": click.source})
    info = dict(labels.info)
    info["tinyloop_format"] = FORMAT_VERSION
    return {"info": info, "images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n} for n, i in cat_ids.items()],
            "ignore_regions": ignore_regions, "clicks": clicks}


def _annotation_to_coco(ann: Annotation, ann_id: int, image_id: int,
                        cat_ids: dict[str, int]) -> dict[str, Any]:
    if ann.category not in cat_ids:
        raise AnnotationError(f"unknown class {ann.category!r}; known classes: "
                              f"{', '.join(cat_ids)}")
    extra: dict[str, Any] = {"provenance": ann.provenance.to_json()}
    if ann.id is not None:
        extra["uid"] = ann.id
    if ann.obox is not None:
        extra["obox"] = ann.obox.as_list()
    if ann.difficult:
        extra["difficult"] = True
    out = {"id": ann_id, "image_id": image_id, "category_id": cat_ids[ann.category],
           "bbox": ann.box.xywh(), "area": ann.box.area, "iscrowd": 0, "tinyloop": extra}
    if ann.provenance.score is not None:
        out["score"] = ann.provenance.score
    if _kept_polygon(ann) is not None:
        out["segmentation"] = _kept_polygon(ann)
    return out


def _kept_polygon(obj: Annotation | IgnoreRegion) -> list[list[float]] | None:
    """COCO `segmentation` for the source polygon, while it still fits the boxes."""
    if obj.polygon is None or not polygon_fits(obj.polygon, obj.box, obj.obox):
        return None
    return [[v for point in obj.polygon for v in point]]


def _read_polygon(entry: dict[str, Any]) -> tuple[tuple[float, float], ...] | None:
    """A one-part, four-point COCO polygon `[[x1, y1, ..., x4, y4]]`, else None (masks of
    other shapes and RLE stay plain COCO data tinyloop does not use)."""
    seg = entry.get("segmentation")
    if not (isinstance(seg, list) and len(seg) == 1 and isinstance(seg[0], list)
            and len(seg[0]) == 8 and all(isinstance(v, (int, float)) for v in seg[0])):
        return None
    flat = seg[0]
    return tuple((flat[i], flat[i + 1]) for i in range(0, 8, 2))


def from_coco(doc: dict[str, Any], source: str = "<labels>") -> LabelSet:
    """Read a tinyloop labels file or any plain COCO detection file.

    Plain COCO files get string ids from their file names' stems (or their integer ids when
    stems collide) and human provenance.
    """
    try:
        cats = {c["id"]: c["name"] for c in doc["categories"]}
        images = doc["images"]
    except (KeyError, TypeError) as e:
        raise AnnotationError(f"{source}: not a COCO detection file (missing {e}); it needs "
                              "'images' and 'categories' lists") from None
    stems = [Path(im["file_name"]).stem for im in images]
    stems_unique = len(set(stems)) == len(stems)
    by_coco_id: dict[Any, ImageLabels] = {}
    out = LabelSet(categories=list(cats.values()),
                   info={k: v for k, v in doc.get("info", {}).items()
                         if k != "tinyloop_format"})
    for im, stem in zip(images, stems):
        ext = im.get("tinyloop", {})
        image_id = ext.get("id") or (stem if stems_unique else str(im["id"]))
        rec = ImageRecord(id=image_id, path=im["file_name"], width=int(im["width"]),
                          height=int(im["height"]), channels=int(ext.get("channels", 3)),
                          metadata=ext.get("metadata", {}))
        item = ImageLabels(rec)
        if im["id"] in by_coco_id:
            raise AnnotationError(f"{source}: duplicate image id {im['id']!r}; every image "
                                  "needs its own id")
        by_coco_id[im["id"]] = item
        out.images.append(item)

    def image_for(entry: dict[str, Any], what: str) -> ImageLabels:
        try:
            return by_coco_id[entry["image_id"]]
        except KeyError:
            raise AnnotationError(f"{source}: {what} refers to image_id "
                                  f"{entry.get('image_id')!r}, which is not in 'images'")\
                from None

    def category_for(cat_id: Any, what: str) -> str:
        try:
            return cats[cat_id]
        except KeyError:
            raise AnnotationError(f"{source}: {what} has unknown category_id {cat_id!r}; "
                                  f"known: {sorted(cats)}") from None

    for a in doc.get("annotations", []):
        ext = a.get("tinyloop", {})
        prov = Provenance.from_json(ext.get("provenance")) if "provenance" in ext else \
            Provenance("model" if "score" in a else "human", score=a.get("score"))
        image_for(a, f"annotation {a.get('id')}").annotations.append(Annotation(
            category=category_for(a["category_id"], f"annotation {a.get('id')}"),
            box=Box.from_xywh(*a["bbox"]),
            obox=OrientedBox(*ext["obox"]) if "obox" in ext else None,
            provenance=prov, difficult=bool(ext.get("difficult", False)),
            id=ext.get("uid"), polygon=_read_polygon(a)))
    for r in doc.get("ignore_regions", []):
        image_for(r, "ignore region").ignore.append(IgnoreRegion(
            box=Box.from_xywh(*r["bbox"]),
            obox=OrientedBox(*r["obox"]) if "obox" in r else None,
            category=r.get("category", "DontCare"), polygon=_read_polygon(r)))
    for c in doc.get("clicks", []):
        image_for(c, "click").clicks.append(Click(
            x=c["x"], y=c["y"], category=category_for(c["category_id"], "click"),
            round=int(c.get("round", 1)), source=c.get("source", "human")))
    return out


def write_labels(labels: LabelSet, path: str | os.PathLike) -> Path:
    """Write atomically (temp file + rename): a kill mid-write never leaves half a file."""
    return write_json_atomic(path, to_coco(labels))


def read_labels(path: str | os.PathLike) -> LabelSet:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnnotationError(f"{path}: labels file not found") from None
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: not valid JSON ({e}); restore it from DVC with "
                              f"'dvc checkout {path}'") from None
    return from_coco(doc, source=str(path))
