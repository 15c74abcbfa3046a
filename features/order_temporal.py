"""Capture order (`order.method` temporal): ImageRecord.metadata ``capture_time`` (ISO),
else ``flight`` then ``frame`` (HIT-UAV names ``<night>_<alt>_<angle>_<x>_<frame>`` are
parsed when the metadata lacks them); images without either go last, by id, and are
reported. Uses no embeddings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from features.ordering import Ordering, OrderError, OrderRequest, register
from tinyloop.annotations import ImageRecord
from tinyloop.hituav import hituav_metadata


def temporal_key(record: ImageRecord) -> tuple | None:
    """Sort key from capture_time, else flight + frame (HIT-UAV file names as a fallback)."""
    meta = record.metadata or {}
    if meta.get("capture_time"):
        return (str(meta["capture_time"]), "", -1, record.id)
    frame, flight = meta.get("frame"), meta.get("flight")
    if frame is None:
        name = hituav_metadata(Path(record.path).stem)
        if name:
            frame, flight = name["frame"], name["flight"]
    if frame is None:
        return None
    return ("", str(flight or ""), int(frame), record.id)


def temporal_order(records: Sequence[ImageRecord]) -> tuple[np.ndarray, list[str]]:
    """Permutation by capture order, and the ids that had no time (placed last, by id)."""
    keys = [temporal_key(r) for r in records]
    undated = [r.id for r, k in zip(records, keys) if k is None]
    if records and len(undated) == len(records):
        raise OrderError("temporal order needs capture_time or frame metadata, and no image "
                         f"has either (e.g. {records[0].path}); use order.method dissimilar, "
                         "or import images whose names or EXIF carry the capture time")
    ranked = sorted(range(len(records)),
                    key=lambda i: (keys[i] is None, keys[i] or ("", "", -1, records[i].id)))
    return np.asarray(ranked, np.int64), undated



def _order_by_time(request: OrderRequest) -> np.ndarray:
    ids, new_rows = request.ids, request.new_rows
    by_id = {r.id: r for r in (request.records or [])}
    lacking = [ids[r] for r in new_rows if ids[r] not in by_id]
    if lacking:
        raise OrderError(f"temporal order: no image record for {lacking[:5]}; pass the "
                         "pool manifest (data/pool/manifest.json)")
    perm, undated = temporal_order([by_id[ids[r]] for r in new_rows])
    if undated:
        request.notes.append(f"{len(undated)} images have no capture time or frame and "
                             f"were placed last, by id: {', '.join(undated[:5])}")
    return perm


register(Ordering("temporal", uses_embeddings=False, order=_order_by_time))
