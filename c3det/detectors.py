"""One interface to every detector family: train, predict, evaluate, whatever the network.

    family = family_for(params)                      # the family c3det.detector names
    result = family.train(labels, image_root, params, out_dir, kind="c3det")
    shown = predictor("models/iter-002/model.pt", classes).predict("img.jpg", clicks)
    model, meta = eval_model("models/iter-002/model.pt")  # what map_vs_clicks scores

A family is a kind of network with its own trainer, checkpoint file and predictor:
"torchvision" (c3det/torchvision_family.py: Faster R-CNN and RetinaNet, every click kind)
and "yolo" (c3det/yolo/family.py: ultralytics, clicks relabel its boxes). Each module
registers its family (`register`) and is listed in FAMILY_MODULES; callers (flows/, the
CLI) never name one. Adding a family is a new module and a line in FAMILY_MODULES; a new
backbone or box head stays inside its family.

Which family: for training, the one whose `detectors` holds `params.detector`; for a
checkpoint, the one that owns the file by its content (`owns_checkpoint`), not by params:
a project that switches detectors keeps serving its older models. A file no family owns
goes to the default family (that of C3DetParams' default detector), whose loader says
what is wrong with it.

The score threshold is resolved in one place, `predictor` (c3det.threshold.min_score_of:
an explicit min_score wins, else threshold.json beside the checkpoint, else 0), and cut in
one place, c3det.threshold.shown, which every family's predictor applies to its merged
boxes; `ClickPredictor.scored` gives the boxes before that cut.

Nothing here imports torch or a family's framework until a family is used.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from tinyloop.annotations import Annotation, Click, LabelSet
from tinyloop.registry import Registry

# the modules whose import registers a family, in the order checkpoints are offered to them
FAMILY_MODULES = ("c3det.torchvision_family", "c3det.yolo.family")
FAMILIES: Registry["DetectorFamily"] = Registry(FAMILY_MODULES)


@runtime_checkable
class ClickPredictor(Protocol):
    """What every family's predictor does: annotations for an image and its clicks."""
    classes: list[str]
    min_score: float   # model boxes below it are not shown (c3det.threshold.shown)

    def predict(self, image, clicks: Sequence[Click] = ()) -> list[Annotation]:
        """The annotations to show: every click ends with a box of its class."""

    def scored(self, image, clicks: Sequence[Click] = ()) -> list[Annotation]:
        """Every box the model scores, before the min_score cut."""


class DetectorFamily:
    """A detector family: how it trains, what its checkpoint is, how it predicts.

    Subclasses set `name` and `detectors` and implement every method; a family's
    framework is imported inside its methods, so registering one costs nothing."""
    name: str = ""
    detectors: tuple[str, ...] = ()   # the c3det.detector values this family trains

    def owns_checkpoint(self, path: str | Path) -> bool:
        """Is `path` this family's model file (read from its content, never unpickled)?"""
        raise NotImplementedError

    def batch_size(self, params) -> int:
        """Images per training step in `params` (C3DetParams)."""
        raise NotImplementedError

    def with_batch_size(self, params, size: int):
        """`params` training `size` images per step (the loop's CUDA OOM retry)."""
        raise NotImplementedError

    def with_epochs(self, params, epochs: int, *, compress_schedule: bool = False):
        """`params` training `epochs` epochs; `compress_schedule`: the learning-rate
        schedule shrinks with them (a warm-started model's shorter run)."""
        raise NotImplementedError

    def model_name(self, params, kind: str) -> str:
        """What `train` trains for `kind`, in words (the CLI's summary line)."""
        raise NotImplementedError

    def train(self, labels: LabelSet, image_root: str | Path, params, out_dir: str | Path,
              *, kind: str = "c3det", init_from: str | Path | list | None = None,
              resume: bool = True, progress: bool = True, tiling=None,
              recipe: str = "end_to_end", detector_dir: str | Path | None = None,
              detector_init: str | Path | None = None, scratch_dir: str | Path | None = None,
              version: str | None = None, model_base: str | Path | None = None,
              click_epochs: int | None = None) -> dict:
        """Train (or resume, or find finished) a model on `labels` into out_dir/model.pt.

        kind: plain / early_fusion / late_fusion / c3det, where the family has click
        branches; init_from: weights to start from; resume: False starts over;
        recipe "detector_first": the plain detector first (into `detector_dir`, from
        `detector_init`), then the click branch alone (`click_epochs` of it, None: as
        many as the detector's), where the family has the two;
        scratch_dir: where a family may put an exported training set (removed after);
        version: the model's name in its annotations; model_base: the directory relative
        model files in params are taken from. Returns {"model": path, "epochs": rows, ...}.
        """
        raise NotImplementedError

    def predictor(self, path: str | Path, classes: Sequence[str] | None = None, *,
                  min_score: float, tiling=None, device=None) -> ClickPredictor:
        """The predictor of the model file `path`, showing boxes from `min_score`."""
        raise NotImplementedError

    def eval_model(self, path: str | Path, classes: Sequence[str] | None = None, *,
                   tiling=None, passthrough: bool = False) -> tuple[Callable, dict]:
        """(what c3det.evaluate.map_vs_clicks scores, meta with "kind" and "classes") of
        the model file `path`; `passthrough`: as the Passthrough baseline (clicks only
        relabel boxes)."""
        raise NotImplementedError


def register(family: DetectorFamily) -> DetectorFamily:
    """Make `family` known to `family_for` and `family_of_checkpoint`."""
    taken = {d for f in FAMILIES.so_far().values() if f.name != family.name
             for d in f.detectors}
    clash = taken & set(family.detectors)
    if clash:
        raise ValueError(f"detector family {family.name!r}: {sorted(clash)} already belong "
                         "to another family")
    return FAMILIES.register(family)


def families() -> list[DetectorFamily]:
    """Every registered family, in FAMILY_MODULES order."""
    return list(FAMILIES.entries().values())


def family_for(params) -> DetectorFamily:
    """The family that trains `params.detector` (C3DetParams)."""
    for family in families():
        if params.detector in family.detectors:
            return family
    known = sorted(d for f in families() for d in f.detectors)
    raise ValueError(f"c3det.detector {params.detector!r} belongs to no detector family; "
                     f"known: {', '.join(known)}")


def family_of_checkpoint(path: str | Path) -> DetectorFamily:
    """The family that owns the model file `path`; the default family when none does."""
    for family in families():
        if family.owns_checkpoint(path):
            return family
    return default_family()


def default_family() -> DetectorFamily:
    """The family of C3DetParams' default detector."""
    from c3det.config import C3DetParams
    return family_for(C3DetParams())


def predictor(path: str | Path, classes: Sequence[str] | None = None, *,
              min_score: float | None = None, tiling=None, device=None) -> ClickPredictor:
    """The predictor of the model file `path`, of whichever family wrote it, showing
    boxes from `min_score` (None: the threshold chosen for the model, else 0)."""
    from c3det.threshold import min_score_of
    return family_of_checkpoint(path).predictor(
        path, classes, min_score=min_score_of(path, min_score), tiling=tiling, device=device)


def eval_model(path: str | Path, classes: Sequence[str] | None = None, *, tiling=None,
               passthrough: bool = False) -> tuple[Any, dict]:
    """(model for c3det.evaluate.map_vs_clicks, meta) of the model file `path`, of
    whichever family wrote it (DetectorFamily.eval_model)."""
    return family_of_checkpoint(path).eval_model(path, classes, tiling=tiling,
                                                 passthrough=passthrough)


def checkpoint_mentions(path: str | Path, marker: bytes) -> bool:
    """Does the pickle inside the torch.save zip `path` hold `marker` (a class path, a
    format string)? Nothing is unpickled; False for a missing or non-zip file."""
    try:
        with zipfile.ZipFile(path) as z:
            pkl = next((n for n in z.namelist() if n.endswith("/data.pkl")), None)
            return pkl is not None and marker in z.read(pkl)
    except (OSError, zipfile.BadZipFile):
        return False
