"""Which images are the pool (to annotate) and which are held out for evaluation.

The held-out split is fixed by flows.eval_split, else a flows.eval_fraction share chosen by a
hash of the image id, so a new image never moves an old one between pool and evaluation. A
simulated project also leaves the images the source left unlabeled out of the pool.
"""
from __future__ import annotations

import hashlib
from collections import Counter

from flows.project.project import Project
from tinyloop.annotations import LabelSet
from tinyloop.cocofile import read_labels
from tinyloop.ingest import is_labelled

SIMULATED_MARKER = "simulated"


def pool(p: Project) -> LabelSet:
    """The images to annotate: the manifest minus the held-out evaluation images; in a
    simulated project also minus the images the source left unlabeled (the simulated
    annotator has no truth for them)."""
    manifest = read_labels(p.layout.manifest)
    held_out, simulated = held_out_ids(p, manifest), is_simulated(p)
    keep = [i for i in manifest if i.id not in held_out and
            (is_labelled(i) or not simulated)]
    return LabelSet(manifest.categories, keep, manifest.info)


def eval_set(p: Project) -> LabelSet:
    """Ground truth of the held-out images (empty when nothing is held out)."""
    if not p.layout.ground_truth.exists():
        return LabelSet(p.classes)
    gt = read_labels(p.layout.ground_truth)
    held_out = held_out_ids(p, gt)
    items = [i for i in gt if i.id in held_out]
    if p.params.flows.eval_max_images:
        items = items[:p.params.flows.eval_max_images]
    return LabelSet(gt.categories, items, gt.info)


def held_out_ids(p: Project, images: LabelSet) -> set[str]:
    """The evaluation images among `images`: those in flows.eval_split; when none is, a
    flows.eval_fraction share of the labelled ones, chosen by a hash of the id (stable:
    a new image never moves an old one between pool and evaluation)."""
    split, fraction = p.params.flows.eval_split, p.params.flows.eval_fraction
    ids = {i.id for i in images if i.image.metadata.get("split") == split}
    if ids or not fraction:
        return ids
    return {i.id for i in images if is_labelled(i) and _unit_hash(i.id) < fraction}


def _unit_hash(image_id: str) -> float:
    """A fixed pseudo-random number in [0, 1) for an image id."""
    digest = hashlib.sha256(image_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def held_out_note(p: Project) -> str | None:
    """What to do when nothing is held out for evaluation (mAP cannot be measured)."""
    manifest = read_labels(p.layout.manifest)
    if not p.layout.ground_truth.exists() or held_out_ids(p, manifest):
        return None
    splits = Counter(str(i.image.metadata.get("split", "none")) for i in manifest)
    found = ", ".join(f"{k} ({n})" for k, n in sorted(splits.items()))
    return (f"no held-out images: none is in split {p.params.flows.eval_split!r} (splits "
            f"found: {found}), so mAP will not be measured; set flows.eval_split in "
            "params.yaml to one of those splits, or flows.eval_fraction (e.g. 0.1) to hold "
            "out that share of the labelled images")


def is_simulated(p: Project) -> bool:
    """True once the simulated annotator has run (or is about to run) on this project."""
    return (p.layout.state / SIMULATED_MARKER).exists()


def mark_simulated(p: Project) -> None:
    """Record that this project's batches are annotated by the simulator (before its pool
    is ordered: from then on, images without source labels stay out of the pool)."""
    marker = p.layout.state / SIMULATED_MARKER
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("annotated by the simulated annotator (flows/accounting/simulator.py)\n")
