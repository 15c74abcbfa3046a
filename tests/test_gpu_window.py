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
