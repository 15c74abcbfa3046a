"""Dataset statistics: images per split, objects per class, ignore regions, object sizes.

Object size is sqrt(w * h) of the axis-aligned box (`Box.size`), bucketed as in the tiny
object literature: < 12, 12-20, 20-32 and > 32 px.
"""
from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from tinyloop.annotations import LabelSet

SIZE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("<12", 0.0, 12.0), ("12-20", 12.0, 20.0), ("20-32", 20.0, 32.0),
    (">32", 32.0, float("inf")))


def size_bucket(size: float) -> str:
    for name, lo, hi in SIZE_BUCKETS:
        if lo <= size < hi:
            return name
    return SIZE_BUCKETS[-1][0]


def dataset_stats(labels: LabelSet) -> dict[str, Any]:
    """Counts as a JSON-ready dict (see `format_stats` for the printed form)."""
    splits = Counter(str(im.image.metadata.get("split", "-")) for im in labels)
    sizes = [a.box.size for im in labels for a in im.annotations]
    buckets = {name: 0 for name, _, _ in SIZE_BUCKETS}
    per_class = {c: dict(buckets) for c in labels.categories}
    for im in labels:
        for a in im.annotations:
            b = size_bucket(a.box.size)
            buckets[b] += 1
            per_class.setdefault(a.category, {name: 0 for name, _, _ in SIZE_BUCKETS})[b] += 1
    return {
        "images": len(labels),
        "images_per_split": dict(sorted(splits.items())),
        "labeled_images": sum(1 for im in labels if im.annotations or im.ignore),
        "objects": len(sizes),
        "class_counts": labels.class_counts(),
        "ignore_regions": dict(Counter(r.category for im in labels for r in im.ignore)),
        "oriented_objects": sum(a.obox is not None for im in labels for a in im.annotations),
        "size_buckets": buckets,
        "size_buckets_per_class": per_class,
        "median_size_px": statistics.median(sizes) if sizes else None,
    }


def format_stats(stats: dict[str, Any]) -> str:
    """A plain-text report of `dataset_stats`."""
    n = stats["objects"] or 1
    lines = [f"images: {stats['images']} ("
             + ", ".join(f"{k} {v}" for k, v in stats["images_per_split"].items()) + ")",
             f"objects: {stats['objects']} ({stats['oriented_objects']} with oriented boxes)"
             + (f", median size {stats['median_size_px']:.1f} px"
                if stats["median_size_px"] is not None else "")]
    names = list(stats["size_buckets"])
    width = max([len(c) for c in stats["class_counts"]] + [10])
    lines.append("")
    lines.append(f"{'class':<{width}} {'objects':>8} " + " ".join(f"{b:>7}" for b in names))
    for cls, count in stats["class_counts"].items():
        per = stats["size_buckets_per_class"].get(cls, {})
        lines.append(f"{cls:<{width}} {count:>8} " +
                     " ".join(f"{per.get(b, 0):>7}" for b in names))
    lines.append(f"{'all':<{width}} {stats['objects']:>8} " +
                 " ".join(f"{stats['size_buckets'][b]:>7}" for b in names))
    lines.append(f"{'share':<{width}} {'':>8} " +
                 " ".join(f"{100 * stats['size_buckets'][b] / n:>6.1f}%" for b in names))
    ignore = stats["ignore_regions"]
    lines.append("")
    lines.append("ignore regions: " + (", ".join(f"{k} {v}" for k, v in ignore.items())
                                       if ignore else "none"))
    return "\n".join(lines)
