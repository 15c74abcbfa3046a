"""One detector interface (c3det.detectors): families found by params and by checkpoint,
the score threshold read once and cut in one place, and no family branch left in flows/.
(The YOLO family through the interface: tests/test_yolo_backend.py, which trains one.)"""
from __future__ import annotations

import ast
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import c3det.threshold
from c3det import checkpoint, detectors
from c3det.config import C3DetParams
from tinyloop.annotations import Annotation, Box, Click, Provenance

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["Person", "Car", "Bicycle", "OtherVehicle"]
# an untrained tiny detector that keeps every box (scores spread around 1/5)
FAST = dict(rpn_proposals_train=200, rpn_proposals_test=100, roi_batch_size=64,
            score_thresh=0.0)

# --- flows/ names no detector family --------------------------------------------------------

FAMILY_NAMES = {"yolo", "faster_rcnn", "retinanet", "torchvision", "ultralytics"}
FAMILY_IDENTIFIERS = {"is_yolo_checkpoint", "YoloPredictor", "YoloEvalModel", "Predictor",
                      "Passthrough", "yolo"}
# modules of one family: flows/ reaches them through c3det.detectors only
FAMILY_MODULES = ("c3det.yolo", "c3det.train", "c3det.predict", "c3det.baselines",
                  "c3det.torchvision_family")
ALLOWED: set[tuple[str, int]] = set()   # (file, line) of accepted exceptions: none


def family_branches(source: str) -> list[tuple[int, str]]:
    """(line, what) of every place `source` picks or names a detector family: a comparison
    or match with a family's name, a family's own classes or functions, an import of a
    family's module, a `.yolo` params section. Comments and docstrings do not count."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for c in ast.walk(node):
                if isinstance(c, ast.Constant) and c.value in FAMILY_NAMES:
                    found.append((node.lineno, f"compares with {c.value!r}"))
        elif isinstance(node, ast.MatchValue) and isinstance(node.value, ast.Constant) \
                and node.value.value in FAMILY_NAMES:
            found.append((node.lineno, f"matches {node.value.value!r}"))
        elif isinstance(node, ast.Name) and node.id in FAMILY_IDENTIFIERS:
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute) and node.attr in FAMILY_IDENTIFIERS:
            found.append((node.lineno, f".{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found += [(node.lineno, f"imports {n}") for n in names if _of_family(n)]
            found += [(node.lineno, f"imports {a.name}") for a in node.names
                      if a.name in FAMILY_IDENTIFIERS]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, f"imports {a.name}") for a in node.names
                      if _of_family(a.name)]
    return sorted(set(found))


def _of_family(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in FAMILY_MODULES)


def test_the_scan_finds_family_branches():
    src = '''
"""docstring naming YoloPredictor and detector == "yolo" is fine"""
# so is a comment: is_yolo_checkpoint(path)
from c3det.yolo.models import is_yolo_checkpoint
from c3det import train
import c3det.predict
def f(params, meta, path):
    if params.detector == "yolo":
        return params.yolo.batch
    if meta["kind"] != "yolo" and is_yolo_checkpoint(path):
        return 1
    match params.detector:
        case "retinanet":
            return 2
'''
    found = {line for line, _ in family_branches(src)}
    assert found == {4, 5, 6, 8, 9, 10, 13}


def test_flows_has_no_detector_family_branch():
    """Every family is chosen inside c3det (c3det.detectors): flows/ trains, predicts and
    evaluates through that interface, so a new family or backbone needs no change there."""
    found = []
    for path in sorted((ROOT / "flows").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        for line, what in family_branches(path.read_text(encoding="utf-8")):
            if (rel, line) not in ALLOWED:
                found.append(f"{rel}:{line}: {what}")
    assert not found, "detector family branches in flows/ (use c3det.detectors):\n" + \
        "\n".join(found)


# --- which family ---------------------------------------------------------------------------

def test_params_pick_the_family_and_every_detector_has_one():
    names = {d: detectors.family_for(C3DetParams(detector=d)).name
             for d in ("faster_rcnn", "retinanet", "yolo")}
    assert names == {"faster_rcnn": "torchvision", "retinanet": "torchvision", "yolo": "yolo"}
    assert detectors.default_family().name == "torchvision"
    with pytest.raises(ValueError, match="no detector family"):
        detectors.family_for(replace(C3DetParams(), detector="detr"))


def test_a_checkpoint_says_its_family(tmp_path):
    import torch
    torch.save({"format": checkpoint.FORMAT, "state_dict": {}}, tmp_path / "c3det.pt")
    with zipfile.ZipFile(tmp_path / "yolo.pt", "w") as z:   # what ultralytics pickles
        z.writestr("yolo/data.pkl", b"\x80\x02cultralytics.nn.tasks\nDetectionModel\n")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    assert [detectors.family_of_checkpoint(tmp_path / f).name for f in
            ("c3det.pt", "yolo.pt", "junk.pt", "missing.pt")] == \
        ["torchvision", "yolo", "torchvision", "torchvision"]   # unknown: the default's


def test_a_second_family_cannot_claim_a_detector():
    class Copy(detectors.DetectorFamily):
        name, detectors = "copy", ("yolo",)
    with pytest.raises(ValueError, match="already belong"):
        detectors.register(Copy())


def test_families_size_their_own_schedule():
    frcnn, yolo = C3DetParams(), C3DetParams(detector="yolo")
    tv, yf = detectors.family_for(frcnn), detectors.family_for(yolo)
    assert tv.batch_size(tv.with_batch_size(frcnn, 3)) == 3
    assert yf.batch_size(yf.with_batch_size(yolo, 5)) == 5
    assert yf.with_batch_size(yolo, 5).train == yolo.train    # only its own section
    t = replace(frcnn.train, epochs=24, lr_steps=[16, 22])
    short = tv.with_epochs(replace(frcnn, train=t), 6, compress_schedule=True).train
    assert (short.epochs, short.lr_steps) == (6, [4])          # the steps compressed too
    assert tv.with_epochs(replace(frcnn, train=t), 6).train.lr_steps == [16, 22]
    assert yf.with_epochs(yolo, 6, compress_schedule=True).yolo.epochs == 6


# --- the score threshold: read once, cut in one place ---------------------------------------

@pytest.fixture
def c3det_model(tmp_path):
    """An untrained tiny c3det checkpoint and an image it finds boxes on."""
    import torch
    from c3det.model import build_model
    old = torch.get_num_threads()
    torch.set_num_threads(min(2, old))
    torch.manual_seed(0)
    pixels = np.random.default_rng(0).random((64, 80, 3)) * 255
    Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "a.png")
    model = build_model("c3det", len(CLASSES), C3DetParams(**FAST)).eval()
    path = checkpoint.save(tmp_path / "iter-001" / "model.pt", model,
                           {"kind": "c3det", "classes": CLASSES})
    yield path, str(tmp_path / "a.png")
    torch.set_num_threads(old)


def _boxes(anns) -> list[tuple]:
    return [(a.category, tuple(a.box.xyxy()), a.score, a.provenance.source) for a in anns]


def test_the_interface_predictor_applies_the_models_threshold_and_an_explicit_one_wins(
        c3det_model, monkeypatch):
    path, image = c3det_model
    every = detectors.predictor(path, CLASSES).predict(image)   # no threshold yet: all
    scores = sorted(a.score for a in every)
    t = scores[len(scores) // 2]
    assert scores[0] < t
    c3det.threshold.write_threshold(path, {"min_score": t, "images": 12})
    assert json.loads(c3det.threshold.threshold_path(path).read_text())["min_score"] == t

    reads = []
    real = c3det.threshold.read_min_score
    monkeypatch.setattr(c3det.threshold, "read_min_score",
                        lambda p: (reads.append(p), real(p))[1])
    chosen = detectors.predictor(path, CLASSES)
    assert isinstance(chosen, detectors.ClickPredictor)
    assert chosen.min_score == t and len(reads) == 1     # read once, by the interface
    shown = chosen.predict(image)
    assert _boxes(shown) == _boxes([a for a in every if a.score >= t])
    assert 0 < len(shown) < len(every)
    assert _boxes(chosen.scored(image)) == _boxes(every)  # before the cut: every box

    explicit = detectors.predictor(path, CLASSES, min_score=0.0)
    assert explicit.min_score == 0.0 and len(reads) == 1  # an explicit score reads nothing
    assert _boxes(explicit.predict(image)) == _boxes(every)
    higher = detectors.predictor(path, CLASSES, min_score=1.0)
    clicked = higher.predict(image, [Click(40, 30, "Car")])
    assert clicked and all(a.provenance.source == "click_refined" for a in clicked)


def test_eval_model_gives_map_vs_clicks_its_model_and_meta(c3det_model):
    from c3det.model import build_model
    path, _ = c3det_model
    model, meta = detectors.eval_model(path, CLASSES)
    assert meta["kind"] == "c3det" and meta["classes"] == CLASSES and not model.training
    plain = checkpoint.save(path.parent.parent / "plain" / "model.pt",
                            build_model("plain", len(CLASSES), C3DetParams(**FAST)),
                            {"kind": "plain", "classes": CLASSES})
    wrapped, _ = detectors.eval_model(plain, passthrough=True)
    assert wrapped.kind == "passthrough" and not wrapped.training
    with pytest.raises(checkpoint.CheckpointError, match="trained on classes"):
        detectors.eval_model(path, ["Person"])


def test_shown_keeps_click_boxes_and_unscored_ones():
    def ann(score, source="model"):
        return Annotation("Car", Box(0, 0, 4, 4), provenance=Provenance(source, "v", score))
    boxes = [ann(0.2), ann(0.6), ann(0.1, "click_refined"), ann(None, "human")]
    assert [a.score for a in c3det.threshold.shown(boxes, 0.5)] == [0.6, 0.1, None]
    assert c3det.threshold.min_score_of("nowhere/model.pt") == 0.0
    assert c3det.threshold.min_score_of("nowhere/model.pt", fallback=None) is None
    assert c3det.threshold.min_score_of("nowhere/model.pt", 0.3) == 0.3
