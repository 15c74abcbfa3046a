"""mongod lifecycle by PID, and the `tinyloop app` sync / pull commands."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_fiftyone import make_project, unique_name

pytestmark = pytest.mark.mongo
REPO = Path(__file__).resolve().parents[1]


def test_project_mongod_is_reused_and_stopped_by_pid(tmp_path, mongo_uri):
    from flows.annotate import mongo
    env_before = os.environ["FIFTYONE_DATABASE_URI"]
    try:
        uri = mongo.ensure_mongo(tmp_path, port=mongo.free_port(), configure=False)
        info = mongo.running(tmp_path)
        assert info and info["uri"] == uri
        assert (tmp_path / ".tinyloop/mongo/db").is_dir()   # data inside the project
        assert mongo.ensure_mongo(tmp_path, configure=False) == uri  # one mongod, reused
        assert mongo.running(tmp_path)["pid"] == info["pid"]
        assert mongo.stop_mongo(tmp_path)
        assert mongo.running(tmp_path) is None and not mongo._alive(info["pid"])
        assert not mongo.stop_mongo(tmp_path)               # nothing left to stop
    finally:
        assert os.environ["FIFTYONE_DATABASE_URI"] == env_before  # session's DB untouched
        mongo.stop_mongo(tmp_path)


def test_cli_sync_and_pull_report_bad_boxes(tmp_path, mongo_uri):
    import fiftyone as fo
    images_dir, pre = make_project(tmp_path)
    name = unique_name("cli")
    (tmp_path / "params.yaml").write_text(
        f"data:\n  source: {images_dir}\nannotate:\n  dataset_name: {name}\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "flows.cli", "app", *args, "-C",
                               str(tmp_path)], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=300)

    r = cli("sync", "1")
    assert r.returncode == 0, r.stderr
    assert "batch-001" in r.stdout
    ds = fo.load_dataset(name)
    try:
        sample = ds.first()
        sample["corrections"].detections.append(
            fo.Detection(label="Tank", bounding_box=[0.1, 0.1, 0.1, 0.1]))
        sample.save()
        r = cli("pull", "1")
        assert r.returncode == 1 and "unknown class 'Tank'" in r.stderr
        assert "needs-fix" in r.stderr
        assert not (tmp_path / "data/batches/001/labels.json").exists()
        sample.reload()
        assert "needs-fix" in sample.tags
    finally:
        ds.delete()
