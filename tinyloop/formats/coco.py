"""COCO JSON: one file for many images; `bbox` is [x, y, width, height] in pixels.

Reading accepts plain COCO detection files and tinyloop labels files (COCO plus the
extensions documented in tinyloop/cocofile.py: oriented boxes, provenance, ignore regions,
clicks, stable ids). A broken entry (duplicate image id, annotation of an unknown image or
category, malformed bbox) is reported and left out; the rest of the file is still read.

Export:
- `export_coco`: a tinyloop labels file (a valid COCO file that also keeps the extensions).
- `export_fiftyone_coco`: a plain COCO file for FiftyOne's `COCODetectionDataset` importer
  (`fo.Dataset.from_dir(dataset_type=fo.types.COCODetectionDataset, data_path=<image root>,
  labels_path=<file>)`): only standard keys plus `score`, which FiftyOne reads as the
  detection's confidence. Ignore regions become annotations of their own category
  (DontCare) with `iscrowd: 1`, so annotators see them and COCO-style evaluation treats
  them as crowd regions.
"""
from __future__ import annotations

import difflib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from tinyloop.annotations import LabelSet
from tinyloop.atomic import write_json_atomic
from tinyloop.cocofile import from_coco, write_labels
from tinyloop.formats import FormatError, LabelFile
from tinyloop.formats.registry import (LabelReader, LabelWriter, register_reader,
                                        register_writer)


# Keys this reader uses, and keys other COCO tools commonly write that carry nothing tinyloop
# needs: neither is reported. Any other key is, with a did-you-mean (a typo such as 'box' for
# 'bbox' would otherwise silently drop the data it holds).
TOP_KEYS = ("info", "licenses", "images", "annotations", "categories")
TINYLOOP_TOP_KEYS = ("ignore_regions", "clicks")        # tinyloop/cocofile.py extensions
OTHER_TOOLS_TOP_KEYS = ("type",)
IMAGE_KEYS = ("id", "file_name", "width", "height")
OTHER_TOOLS_IMAGE_KEYS = ("license", "coco_url", "flickr_url", "date_captured")
ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox")
OTHER_TOOLS_ANNOTATION_KEYS = ("segmentation", "area", "iscrowd", "score", "attributes",
                               "keypoints", "num_keypoints")
MAX_KEYS_NAMED = 5


def read_coco(path: str | os.PathLike) -> tuple[list[str], list[LabelFile], list[FormatError]]:
    """(class names, one LabelFile per image, problems found in the file)."""
    path = Path(path)
    doc = _load(path)
    problems: list[FormatError] = []
    problems += _unknown_key_problems(path, "top-level", [doc],
                                      TOP_KEYS + TINYLOOP_TOP_KEYS + OTHER_TOOLS_TOP_KEYS)
    images = [im for im in doc["images"] if _image_ok(im, path, problems)]
    problems += _unknown_key_problems(path, "image", images,
                                      IMAGE_KEYS + OTHER_TOOLS_IMAGE_KEYS)
    counts = Counter(im["id"] for im in images)
    for image_id in sorted((k for k, n in counts.items() if n > 1), key=str):
        names = [im["file_name"] for im in images if im["id"] == image_id]
        problems.append(FormatError(path, f"duplicate image id {image_id!r} used by "
                                    f"{', '.join(map(repr, names))}; these images and "
                                    "their annotations were left out",
                                    "give every image its own id"))
    images = [im for im in images if counts[im["id"]] == 1]
    known_images = {im["id"] for im in images}
    duplicated = {k for k, n in counts.items() if n > 1}
    cats = {c.get("id") for c in doc["categories"]}
    file_names = {im["id"]: im["file_name"] for im in images}
    annotations = []
    for a in doc["annotations"]:
        if isinstance(a, dict) and a.get("image_id") in duplicated:
            continue
        if _annotation_problem(a, file_names, cats, path, problems):
            continue
        annotations.append(a)
    problems += _unknown_key_problems(path, "annotation", annotations,
                                      ANNOTATION_KEYS + OTHER_TOOLS_ANNOTATION_KEYS)
    regions = [r for r in doc.get("ignore_regions", []) if r.get("image_id") in known_images]
    clean = dict(doc, images=images, annotations=annotations, ignore_regions=regions,
                 clicks=[c for c in doc.get("clicks", []) if c.get("image_id") in known_images
                         and c.get("category_id") in cats])
    labels = from_coco(clean, source=str(path))
    cat_names = {c.get("id"): c.get("name") for c in doc["categories"]}
    written: dict[Any, list[str]] = {}   # from_coco keeps each image's annotations in order
    for a in annotations:
        written.setdefault(a["image_id"], []).append(
            f"{_where(a, file_names)} ({cat_names[a['category_id']]}): bbox {a['bbox']}")
    files = []
    for raw, item in zip(images, labels.images):
        files.append(LabelFile(
            source=path, image_ref=raw["file_name"], width=item.image.width,
            height=item.image.height, annotations=item.annotations, ignore=item.ignore,
            clicks=item.clicks, metadata=dict(item.image.metadata),
            image_id=raw.get("tinyloop", {}).get("id"),
            object_names=written.get(raw["id"], [])))
    return labels.categories, files, problems


def _load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(path, "COCO labels file not found",
                          "set data.labels to the JSON file, relative to data.source") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(path, f"not valid JSON ({e})", "fix or re-export the file") from None
    if not isinstance(doc, dict):
        raise FormatError(path, f"not a COCO detection file: the top level is a "
                          f"{type(doc).__name__}, not an object",
                          "point data.labels at a COCO JSON file")
    # 'annotations' is required too: a file without it is more likely a typo or another
    # kind of file than an unlabeled set, which says so with "annotations": []
    missing = [k for k in ("images", "categories", "annotations")
               if not isinstance(doc.get(k), list)]
    if missing:
        unknown = _unknown_keys(doc, TOP_KEYS + TINYLOOP_TOP_KEYS + OTHER_TOOLS_TOP_KEYS)
        found = f" (found {_describe_keys(unknown, TOP_KEYS)})" if unknown else ""
        raise FormatError(path, f"not a COCO detection file: no {_quoted(missing)} "
                          f"list{'s' if len(missing) > 1 else ''}{found}",
                          "rename the key" if _any_close(unknown, TOP_KEYS) else
                          "point data.labels at a COCO detection JSON file (an unlabeled "
                          "set needs \"annotations\": [])")
    return doc


def _unknown_keys(entry: dict, known: tuple[str, ...]) -> list[str]:
    return [k for k in entry if k not in known and not str(k).startswith("tinyloop")]


def _did_you_mean(key: str, known: tuple[str, ...]) -> str | None:
    close = difflib.get_close_matches(str(key), known, n=1)
    return close[0] if close else None


def _any_close(keys: list[str], known: tuple[str, ...]) -> bool:
    return any(_did_you_mean(k, known) for k in keys)


def _describe_keys(keys: list[str], known: tuple[str, ...]) -> str:
    """"unknown key 'annotation': did you mean 'annotations'?", for up to 5 keys."""
    parts = []
    for k in keys[:MAX_KEYS_NAMED]:
        guess = _did_you_mean(k, known)
        parts.append(f"unknown key {k!r}" + (f": did you mean {guess!r}?" if guess else ""))
    more = len(keys) - MAX_KEYS_NAMED
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def _quoted(keys: list[str]) -> str:
    return ", ".join(repr(k) for k in keys)


def _unknown_key_problems(path: Path, what: str, entries: list[Any],
                          known: tuple[str, ...]) -> list[FormatError]:
    """One problem per distinct unknown key of `entries` (the count says how many have it).

    Pass only the entries that were kept: one left out for lacking a key already names the
    key that stands in for it ("lacks ['file_name'] (it has 'filename': ...)").
    """
    counts: Counter = Counter()
    for entry in entries:
        if isinstance(entry, dict):
            counts.update(_unknown_keys(entry, known))
    out = []
    for key, n in counts.items():
        guess = _did_you_mean(key, known)
        where = f"{n} {what} entr{'y' if n == 1 else 'ies'}" if what != "top-level" \
            else "the top level"
        hint = f": did you mean {guess!r}?" if guess else ""
        out.append(FormatError(path, f"unknown key {key!r} on {where}{hint}; its values were "
                               "not read", f"rename it to {guess!r}" if guess else
                               "remove it, or ignore this if another tool added it"))
    return out


def _image_ok(im: Any, path: Path, problems: list[FormatError]) -> bool:
    missing = [k for k in ("id", "file_name", "width", "height")
               if not isinstance(im, dict) or k not in im]
    if missing:
        hint = _stand_in_hint(im, missing, IMAGE_KEYS + OTHER_TOOLS_IMAGE_KEYS)
        problems.append(FormatError(path, f"image entry {im!r:.120} lacks {missing}{hint}",
                                    "rename the key" if hint else
                                    "add them or remove the entry"))
        return False
    return True


def _stand_in_hint(entry: Any, missing: list[str], known: tuple[str, ...]) -> str:
    """" (it has 'filename': did you mean 'file_name'?)" for keys close to missing ones."""
    if not isinstance(entry, dict):
        return ""
    pairs = [(k, _did_you_mean(k, tuple(missing))) for k in _unknown_keys(entry, known)]
    pairs = [(k, m) for k, m in pairs if m]
    return "".join(f" (it has {k!r}: did you mean {m!r}?)" for k, m in pairs)


def _where(a: dict, file_names: dict) -> str:
    """"image 'a.png', annotation 7": what finds the entry again in the JSON."""
    image = f"image {file_names[a['image_id']]!r}, " if a.get("image_id") in file_names \
        else ""
    return f"{image}annotation {a.get('id')!r}"


def _annotation_problem(a: Any, file_names: dict, cats: set, path: Path,
                        problems: list[FormatError]) -> bool:
    """Report an annotation entry that cannot be used (named by image file name and
    annotation id, values as the file writes them); True when it was."""
    what = _where(a, file_names) if isinstance(a, dict) else repr(a)
    if not isinstance(a, dict):
        message = "is not an object"
    elif a.get("image_id") not in file_names:
        message = f"refers to image_id {a.get('image_id')!r}, which is not in 'images'"
    elif a.get("category_id") not in cats:
        message = f"has unknown category_id {a.get('category_id')!r}"
    elif not (isinstance(a.get("bbox"), list) and len(a["bbox"]) == 4 and
              all(isinstance(v, (int, float)) and not isinstance(v, bool)
                  for v in a["bbox"])):
        message = f"has bbox {a.get('bbox')!r}; expected [x, y, width, height]"
        if "bbox" not in a:
            message += _stand_in_hint(a, ["bbox"],
                                      ANNOTATION_KEYS + OTHER_TOOLS_ANNOTATION_KEYS)
    elif not (a["bbox"][2] > 0 and a["bbox"][3] > 0):
        message = (f"has bbox {a['bbox']} (x, y, width, height): width and height must be "
                   "> 0")
    else:
        return False
    problems.append(FormatError(path, f"{what} {message}; left out",
                                "fix the entry in the COCO file"))
    return True


def export_coco(labels: LabelSet, path: str | os.PathLike) -> Path:
    """A tinyloop labels file (COCO + extensions), written atomically."""
    return write_labels(labels, path)


def fiftyone_coco(labels: LabelSet, include_ignore: bool = True) -> dict[str, Any]:
    """Plain COCO dict for FiftyOne; file_name stays relative to the dataset root."""
    names = list(labels.categories)
    if include_ignore:
        names += sorted({r.category for im in labels.images for r in im.ignore} - set(names))
    cat_ids = {n: i for i, n in enumerate(names, start=1)}
    images, annotations = [], []
    for image_index, item in enumerate(labels.images, start=1):
        rec = item.image
        images.append({"id": image_index, "file_name": rec.path, "width": rec.width,
                       "height": rec.height})
        objects = [(a.category, a.box, a.provenance.score, 0) for a in item.annotations]
        if include_ignore:
            objects += [(r.category, r.box, None, 1) for r in item.ignore]
        for category, box, score, crowd in objects:
            ann = {"id": len(annotations) + 1, "image_id": image_index,
                   "category_id": cat_ids[category], "bbox": box.xywh(), "area": box.area,
                   "iscrowd": crowd}
            if score is not None:
                ann["score"] = score
            annotations.append(ann)
    return {"info": {"description": "exported by tinyloop", **{
                k: v for k, v in labels.info.items() if isinstance(v, (str, int, float))}},
            "licenses": [], "images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n, "supercategory": "object"}
                           for n, i in cat_ids.items()]}


def export_fiftyone_coco(labels: LabelSet, path: str | os.PathLike,
                         include_ignore: bool = True) -> Path:
    """Write `fiftyone_coco(labels)` atomically; see the module docstring."""
    return write_json_atomic(path, fiftyone_coco(labels, include_ignore))


def _write_coco(labels: LabelSet, out: Path, image_root=None) -> Path:
    return export_coco(labels, out / "labels.json")


def _write_fiftyone_coco(labels: LabelSet, out: Path, image_root=None) -> Path:
    return export_fiftyone_coco(labels, out / "labels.json")


# one file for the whole dataset (data.labels): ingest reads it with read_coco
register_reader(LabelReader("coco", None))
register_writer(LabelWriter("coco", _write_coco))
register_writer(LabelWriter("fiftyone-coco", _write_fiftyone_coco))
