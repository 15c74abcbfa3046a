"""`tinyloop train` and `tinyloop evaluate` end to end on a tiny synthetic set."""
import json

import yaml

from flows.cli import main
from tinyloop.cocofile import write_labels
from tinyloop.synthetic import make_synthetic


def test_train_then_evaluate_from_the_command_line(tmp_path, capsys):
    labels, _ = make_synthetic(3, size=(64, 64), objects_per_image=(2, 3),
                               object_size=(6, 10), seed=2, out_dir=tmp_path / "data")
    write_labels(labels, tmp_path / "labels.json")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"c3det": {
        "roi_batch_size": 32,
        "train": {"epochs": 1, "batch_size": 3, "crop_size": 64, "warmup_iters": 1},
        "eval": {"click_steps": [0, 2], "sessions": 2}}}))
    base = ["--params", str(tmp_path / "params.yaml")]
    assert main(base + ["train", "--labels", str(tmp_path / "labels.json"),
                        "--images", str(tmp_path / "data"), "--out", str(tmp_path / "m"),
                        "--kind", "c3det"]) == 0
    assert "trained c3det for 1 epochs on 3 images" in capsys.readouterr().out
    assert (tmp_path / "m/model.pt").exists()
    rc = main(base + ["evaluate", "--labels", str(tmp_path / "labels.json"),
                      "--images", str(tmp_path / "data"), "--model", str(tmp_path / "m/model.pt"),
                      "--out", str(tmp_path / "curve")])
    assert rc == 0
    doc = json.loads((tmp_path / "curve.json").read_text())
    assert doc["models"][0]["steps"] == [0, 2] and len(doc["models"][0]["map_mean"]) == 2
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_evaluate_refuses_a_missing_checkpoint(tmp_path, capsys):
    labels, _ = make_synthetic(1, size=(32, 32), objects_per_image=(1, 1),
                               object_size=(6, 8), seed=2, out_dir=tmp_path / "data")
    write_labels(labels, tmp_path / "labels.json")
    rc = main(["--params", str(tmp_path / "none.yaml"), "evaluate", "--labels",
               str(tmp_path / "labels.json"), "--images", str(tmp_path / "data"),
               "--model", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x")])
    assert rc == 1
    assert "nope.pt" in capsys.readouterr().err
