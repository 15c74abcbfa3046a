"""benchmarks/gpu_window.py: what one device call carries must hold every image the
window's phases read, and its command must fit the device tool."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HITUAV = REPO.parent / "shared/datasets/hit-uav"
sys.path.insert(0, str(REPO / "benchmarks"))


@pytest.mark.skipif(not HITUAV.exists(), reason="needs ../shared/datasets/hit-uav")
def test_the_slice_holds_every_image_the_yolo_and_throughput_phases_pick(tmp_path, monkeypatch):
    import c3det_map_vs_clicks as cmc
    import gpu_window
    from yolo_vs_frcnn import SMOKE
    monkeypatch.setattr(gpu_window, "YOLO_WORK", tmp_path)   # the label cache goes here
    train, test, labels = gpu_window.pick_images(40)
    carried = {i.id for i in [*train.images, *test.images]}
    wanted = [cmc.split(labels, "train", n, 0) for n in (40, SMOKE["train_images"])] + \
        [cmc.split(labels, "val", n, 1) for n in (gpu_window.TEST_IMAGES, SMOKE["test_images"])]
    assert {i.id for s in wanted for i in s.images} == carried
    # the throughput phase splits the carried labels: its 64 (all 40 here) are carried
    from tinyloop.annotations import LabelSet
    carried_set = LabelSet(labels.categories, [*train.images, *test.images])
    assert {i.id for i in cmc.split(carried_set, "train", 64, 0).images} <= carried
    assert len(train.images) == 40 + sum(                           # smoke picks not in the 40
        i.id not in {j.id for j in wanted[0].images} for i in wanted[1].images)


def test_the_device_command_fits_the_tool_and_installs_before_it_imports():
    import gpu_window
    cmd = gpu_window.device_command()
    assert len(cmd) <= 2000
    assert cmd.index("pip install") < cmd.index("gpu_window.py run")
    assert "--target /tmp/site" in cmd and "PYTHONPATH=/tmp/site" in cmd


def test_the_environment_check_names_what_the_box_lacks(monkeypatch):
    """The window stops in seconds, naming the module, instead of failing minutes in."""
    import gpu_window
    monkeypatch.setitem(sys.modules, "ultralytics", None)     # as on a box without the wheel
    row = gpu_window.environment()
    assert any(m.startswith("ultralytics:") for m in row["missing"]), row
    assert row["torch"] and "cpus" in row


def test_collect_files_rows_where_the_reports_read_them(tmp_path, monkeypatch):
    """A returned window: the throughput row under its crop and dtype, each YOLO row in the
    run dir yolo_vs_frcnn.py itself would have used (so its report reads it and a local
    `run` of that cell finds it done), then yolo_vs_frcnn's report."""
    import argparse
    import json
    import gpu_window
    import yolo_vs_frcnn
    monkeypatch.setattr(gpu_window, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(gpu_window, "YOLO_WORK", tmp_path / "yolo")
    monkeypatch.setattr(yolo_vs_frcnn, "WORK", tmp_path / "yolo")
    calls = []
    monkeypatch.setattr(gpu_window.subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    (tmp_path / "results").mkdir()
    a = argparse.Namespace(smoke=False, train_images=400, epochs=4, yolo_epochs=100,
                           yolo_time_h=0.1, seed=0)
    row = {"cell": "yolo_obb", "smoke": False,
           "schedule": {"train_images": 400, "epochs": 100, "time_h": 0.1, "seed": 0}}
    window = {"phases": {"profile": {"rows": [{"setup": {"crop": 512, "amp_dtype": "float16"}}]},
                         "yolo": {"rows": [row]}}}
    (tmp_path / "window.json").write_text(json.dumps(window))
    gpu_window.cmd_collect(argparse.Namespace(dir=str(tmp_path)))
    assert (tmp_path / "results/c3det_train_throughput_512_gpu_float16.json").exists()
    assert json.loads((yolo_vs_frcnn.run_dir(a, "yolo_obb") / "result.json").read_text()) == row
    assert calls and calls[0][-1] == "report"
