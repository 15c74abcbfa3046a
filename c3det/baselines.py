"""Passthrough: the C3Det paper's simplest interactive baseline, one ClickDetector kind.

The plain detector runs without looking at the clicks; its relabel stage then gives every
predicted box a click falls in the clicked class (when several clicks fall in one box, the
last one wins: c3det.click_to_box.relabel_by_clicks). `build_model("passthrough", C)` builds
one untrained; `Passthrough(plain)` turns a trained plain detector into one (the same
modules and weights). Either way it is a `ClickDetector` of kind "passthrough" with the
stages and API of every other kind: train -> the plain detector's losses; eval ->
detections, relabelled by the clicks.
"""
from __future__ import annotations

from c3det.model import ClickDetector


def Passthrough(plain: ClickDetector) -> ClickDetector:  # noqa: N802 - the paper's name
    """The trained plain detector `plain` as a passthrough ClickDetector (shares its
    modules)."""
    if plain.kind != "plain":
        raise ValueError(f"Passthrough wraps a plain detector, got kind {plain.kind!r}")
    model = ClickDetector("passthrough", plain.num_classes, plain.detector, None, plain.params)
    model.class_box_sizes = getattr(plain, "class_box_sizes", None)
    return model.train(plain.training)
