"""Shared test data for the workload, simulator and ranker tests."""
from __future__ import annotations

from tinyloop.annotations import Annotation, Box, ImageLabels, ImageRecord

CLASSES = ["Person", "Car", "Bicycle", "OtherVehicle"]


def grid_truth(n: int, size_of=lambda i: 6.0, image: str = "g") -> ImageLabels:
    """n square objects on a 60 px grid of a 1000x1000 image, far from the borders (so no
    click is clipped); classes cycle through CLASSES; object i is size_of(i) px wide."""
    rec = ImageRecord(image, f"{image}.png", 1000, 1000)
    anns = []
    for i in range(n):
        cx, cy = 60 + (i % 15) * 60, 60 + (i // 15) * 60
        s = size_of(i)
        anns.append(Annotation(CLASSES[i % 4], Box(cx - s / 2, cy - s / 2, cx + s / 2,
                                                   cy + s / 2)))
    return ImageLabels(rec, anns)
