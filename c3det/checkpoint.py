"""Model checkpoints: weights + what is needed to rebuild the model, loadable with weights_only.

    save(path, model, {"kind": "c3det", "classes": [...], "params": C3DetParams | dict,
                       "version": "iter-003", "epoch": 12}, extra={"optimizer": opt.state_dict()})
    model, meta = load(path)          # model in eval mode, on CPU unless map_location says else

`meta["min_score"]`: the score threshold chosen for the model after training, read from the
threshold.json beside the file (c3det.threshold), when there is one.

The file is a plain dict of tensors, numbers, strings and lists, so `torch.load(...,
weights_only=True)` reads it (no pickled code runs). Writes are atomic (temp file + rename):
a crash mid-save leaves the previous checkpoint intact.
"""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from c3det.config import C3DetParams, resolve_norm
from c3det.threshold import read_min_score
from tinyloop.atomic import write_bytes_atomic
from tinyloop.params import ParamsError, build

FORMAT = "tinyloop-c3det/1"
REQUIRED = ("kind", "classes")
# sizes that were fixed before they became params: a checkpoint whose stored params lack one
# was built with this value, whatever today's default is
SIZES_BEFORE_PARAMS = {"fpn_channels": 256, "box_head_dim": 1024}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the fix."""


def save(path: str | Path, model: nn.Module, meta: dict[str, Any],
         extra: dict[str, Any] | None = None) -> Path:
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"checkpoint meta needs {', '.join(missing)}")
    meta = dict(meta)
    params = meta.get("params", getattr(model, "params", C3DetParams()))
    meta["params"] = dataclasses.asdict(params) if dataclasses.is_dataclass(params) else params
    meta.setdefault("version", Path(path).parent.name or "unversioned")
    meta.setdefault("epoch", 0)
    meta["classes"] = list(meta["classes"])
    blob = {"format": FORMAT, "meta": meta, "state_dict": model.state_dict(),
            "extra": extra or {}}
    buf = io.BytesIO()
    torch.save(blob, buf)
    return write_bytes_atomic(path, buf.getvalue())


def read(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict: format, meta, state_dict, extra (optimizer state for resume)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint; train a model first "
                              "('tinyloop train') or give the path of a model.pt")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({e}); it may be truncated "
                              "or from another program: retrain or restore it") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a tinyloop c3det checkpoint (format "
                              f"{blob.get('format') if isinstance(blob, dict) else type(blob)!r}, "
                              f"expected {FORMAT})")
    return blob


def load(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model from its meta and load the weights; returns (model in eval mode, meta)."""
    from c3det.model import build_model
    blob = read(path, map_location)
    meta = blob["meta"]
    try:
        stored = {**SIZES_BEFORE_PARAMS, **(meta.get("params") or {})}
        params = build(C3DetParams, stored, "c3det", file=str(path))
    except ParamsError as e:
        raise CheckpointError(f"{e} (the checkpoint's stored params no longer validate: "
                              "retrain, or load it with the tinyloop version that wrote it)") from None
    # the stored weights replace any initial ones: don't fetch ImageNet weights again, but keep
    # the normalisation layers those weights implied
    params = dataclasses.replace(params, weights="none",
                                 norm=resolve_norm(params.norm, params.weights))
    model = build_model(meta["kind"], len(meta["classes"]), params)
    state = blob["state_dict"]
    if meta["kind"] == "passthrough":  # saved while Passthrough wrapped a plain model
        state = {k.removeprefix("plain."): v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit a {meta['kind']} model with "
                              f"{len(meta['classes'])} classes: {str(e)[:300]}") from None
    model.to(map_location).eval()
    # per-class median box size of the training labels (click-to-box size prior)
    model.class_box_sizes = meta.get("class_box_sizes")
    chosen = read_min_score(path)   # the threshold chosen after training (c3det.threshold)
    if chosen is not None:
        meta["min_score"] = chosen
    return model, meta
