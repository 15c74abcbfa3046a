"""`tinyloop embed` and `tinyloop order` as DVC stage commands: read params.yaml and the pool
manifest, write data/features/ and data/order.json; a grown pool keeps existing positions."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from flows.cli import main
from tinyloop.annotations import ImageLabels, ImageRecord, LabelSet
from tinyloop.cocofile import write_labels

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "hit-uav"
HITUAV = Path(os.environ.get("TINYLOOP_HITUAV",
                             Path(__file__).resolve().parents[2] / "shared/datasets/hit-uav"))
SOURCE = SAMPLE if (SAMPLE / "images").is_dir() else HITUAV
pytestmark = [pytest.mark.skipif(not (SOURCE / "images").is_dir(),
                                 reason="no HIT-UAV images"),
              pytest.mark.usefixtures("one_torch_thread", "cached_networks")]


def _project(tmp_path: Path, files: list[Path], method: str = "dissimilar") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    params = {"data": {"source": str(SOURCE)},
              "features": {"extractor": "resnet18", "weights": "none", "image_size": 32,
                           "batch_size": 8,
                           "num_workers": 0, "device": "cpu"},
              "order": {"method": method, "first_batch_size": 3, "batch_size": 2,
                        "device": "cpu"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    records = [ImageLabels(ImageRecord(f.stem, str(f.relative_to(SOURCE)), 640, 512))
               for f in files]
    write_labels(LabelSet(["Person"], records), tmp_path / "data" / "pool" / "manifest.json")
    return tmp_path / "params.yaml"


def test_embed_then_order_then_grow(tmp_path, capsys):
    files = sorted((SOURCE / "images").rglob("*.jpg"))[:9]
    params = _project(tmp_path, files[:6])
    assert main(["--params", str(params), "embed", "--no-progress"]) == 0
    ids = json.loads((tmp_path / "data/features/ids.json").read_text())["ids"]
    assert ids == [f.stem for f in files[:6]]
    assert main(["--params", str(params), "order"]) == 0
    first = json.loads((tmp_path / "data/order.json").read_text())
    assert sorted(v["position"] for v in first.values()) == list(range(6))
    assert sorted(v["batch"] for v in first.values()) == [1, 1, 1, 2, 2, 3]

    _project(tmp_path, files)                          # the pool grows by 3 images
    assert main(["--params", str(params), "embed", "--no-progress"]) == 0
    assert "embedded 3 new images, reused 6" in capsys.readouterr().out
    assert main(["--params", str(params), "order"]) == 0
    grown = json.loads((tmp_path / "data/order.json").read_text())
    assert all(grown[i] == first[i] for i in first)
    assert sorted(grown[f.stem]["batch"] for f in files[6:]) == [4, 4, 5]


def test_temporal_order_command_and_clear_errors(tmp_path, capsys):
    files = sorted((SOURCE / "images").rglob("*.jpg"))[:5]
    params = _project(tmp_path, files, method="temporal")
    assert main(["--params", str(params), "order"]) == 0   # no embeddings needed
    order = json.loads((tmp_path / "data/order.json").read_text())
    ranked = sorted(order, key=lambda i: order[i]["position"])
    key = lambda s: ("_".join(s.split("_")[:4]), int(s.split("_")[4]))
    assert ranked == sorted(ranked, key=key)
    params = _project(tmp_path / "p2", files, method="dissimilar")
    assert main(["--params", str(params), "order"]) == 1
    assert "run `tinyloop embed`" in capsys.readouterr().err
    (tmp_path / "p2/data/pool/manifest.json").unlink()
    assert main(["--params", str(params), "embed"]) == 1
    assert "manifest.json not found" in capsys.readouterr().err


def test_embed_with_simnet_trains_it_under_the_project_once(tmp_path, monkeypatch, capsys):
    files = sorted((SOURCE / "images").rglob("*.jpg"))[:4]
    params = _project(tmp_path / "project", files)
    doc = yaml.safe_load(params.read_text())
    doc["features"].update(extractor="simnet", simnet={
        "epochs": 1, "batch_size": 4, "image_size": 32, "embedding_dim": 8})
    params.write_text(yaml.safe_dump(doc))
    monkeypatch.chdir(tmp_path)
    assert main(["--params", str(params), "embed", "--no-progress"]) == 0
    assert "SimNet trained" in capsys.readouterr().out
    ckpt = tmp_path / "project" / "models" / "simnet.pt"
    assert ckpt.is_file() and (tmp_path / "project" / "models" / "simnet.json").is_file()
    assert main(["--params", str(params), "embed", "--no-progress"]) == 0
    assert "SimNet trained" not in capsys.readouterr().out  # the checkpoint is reused
