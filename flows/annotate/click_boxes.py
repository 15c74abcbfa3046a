"""Boxes from clicks (issue #30, "Click, don't draw"): the annotator drops a class-labelled
point on each object that has no box; each point becomes a box of its class, provenance
`click_box` (the report and the workload tell them from drawn and model boxes), and the
annotator only fixes the boxes that are off.

Which box a point gets, first that applies:

1. The model's candidate. With a finished model, it runs once on the image with the points
   as clicks; its box of the clicked class that contains the point (the one nearest the
   point if several) is the box. For the C3Det / torchvision family that is
   c3det.click_to_box: the detection of that class containing the click, else the candidate
   containing it best by centre score x objectness (x the class's size score).
2. The class's size prior. The same model with no candidate containing the click: a box of
   the class's typical size (median of its training boxes) centred on the point
   (c3det.click_to_box, step 3; a default square for a class it never saw).
3. The image. No model yet (batch 1), or a model whose boxes do not explain the click (a
   YOLO model's clicks only relabel its boxes): c3det.image_click_box builds a box from the
   local contrast around the point and the class's typical size in the labelled boxes so far.

A point inside a box of its class (one already there, or one an earlier point made) adds
nothing: that object has its box. Existing boxes are never changed: this only adds.

No FiftyOne here; the App's operator (flows/fiftyone_plugin, "Boxes from clicks") calls it,
bound to the project by flows.model_policy.project_click_boxes, through
flows.annotate.fiftyone_refine.
"""
from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Callable, Sequence

from c3det.image_click_box import ImageClickBoxer, gray_image
from tinyloop.annotations import Annotation, Box, Click, Provenance

CLICK_BOX = "click_box"


def boxes_from_clicks(image: str | Path, points: Sequence[Click],
                      existing: Sequence[Annotation], predictor=None,
                      image_boxer: Callable[[], ImageClickBoxer] = ImageClickBoxer
                      ) -> list[Annotation]:
    """The new `click_box` boxes for `points` on `image` (module doc: model candidate, size
    prior, image). `existing`: the image's boxes now (never changed); `predictor`: a
    c3det.detectors.ClickPredictor or None; `image_boxer()`: the image-based boxer, called
    at most once and only when a point needs it (learning it can cost seconds)."""
    todo = [p for p in points if not _explained(p, existing)]
    model_boxes = predictor.predict(image, todo) if predictor is not None and todo else []
    boxer, gray = cache(image_boxer), cache(lambda: gray_image(image))
    made: list[Annotation] = []
    for point in todo:
        if _explained(point, made):  # a second point on an object a first one boxed
            continue
        box = _model_box(point, model_boxes) or _image_box(point, boxer(), gray())
        made.append(box)
    return made


def _explained(point: Click, boxes: Sequence[Annotation]) -> bool:
    """Is there a box of the point's class containing it?"""
    return any(a.category == point.category and a.box.contains(point.x, point.y)
               for a in boxes)


def _model_box(point: Click, model_boxes: Sequence[Annotation]) -> Annotation | None:
    """Cases 1 and 2: the model's box of the point's class containing it, nearest first."""
    hits = [a for a in model_boxes
            if a.category == point.category and a.box.contains(point.x, point.y)]
    if not hits:
        return None
    best = min(hits, key=lambda a: _distance2(a.box, point))
    return Annotation(point.category, best.box, provenance=Provenance(
        CLICK_BOX, best.provenance.model_version))


def _image_box(point: Click, boxer: ImageClickBoxer, gray) -> Annotation:
    """Case 3: the box c3det.image_click_box makes from the pixels around the point."""
    box = Box(*boxer.box(gray, point.x, point.y, point.category))
    return Annotation(point.category, box, provenance=Provenance(CLICK_BOX))


def _distance2(box: Box, point: Click) -> float:
    cx, cy = box.center
    return (cx - point.x) ** 2 + (cy - point.y) ** 2
