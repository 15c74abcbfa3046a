"""HIT-UAV file names: `<night>_<altitude m>_<camera angle deg>_<part>_<frame>`, e.g.
`0_100_30_0_03306` (day, 100 m, 30 degrees, flight part 0, frame 3306).

The one pattern for them: the import turns a matching image id into metadata
(tinyloop.ingest) and the temporal ordering falls back on a matching file name when an
image has no such metadata (features.order).
"""
from __future__ import annotations

import re
from typing import Any

HITUAV_NAME = re.compile(r"^(?P<night>[01])_(?P<alt>\d+)_(?P<angle>\d+)_(?P<part>\d+)_"
                         r"(?P<frame>\d+)$")


def hituav_metadata(name: str) -> dict[str, Any] | None:
    """{night, altitude_m, camera_angle_deg, frame, flight} of a HIT-UAV file name (no
    extension), or None for any other name; `flight` ("0_100_30_0") groups one flight's
    frames."""
    m = HITUAV_NAME.match(name)
    if not m:
        return None
    return {"night": int(m["night"]), "altitude_m": int(m["alt"]),
            "camera_angle_deg": int(m["angle"]), "frame": int(m["frame"]),
            "flight": f"{m['night']}_{m['alt']}_{m['angle']}_{m['part']}"}
