"""Fan-out over Dask: prepare (feature chunks) and pre-annotation (chunks of a batch) on a
2-worker LocalCluster, against a real `prefect server start` started and stopped by
scripts/prefect-server."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.fixtures_flows import REPO, cli_env, make_project

pytestmark = pytest.mark.prefect

SCRIPT = """
import json, sys
from flows.loop import prefect_env, prepare, preannotate_batch, with_runner
from flows.project.project import Project
from c3det.checkpoint import save
from c3det.model import build_model
from tinyloop.atomic import write_json_atomic
from prefect.client.orchestration import get_client
root = sys.argv[1]
prefect_env(root)
with_runner(prepare, root)(root)
p = Project.open(root)
# an untrained model 1 is enough to exercise the pre-annotation fan-out of batch 2
model = build_model("c3det", len(p.classes), p.params.c3det)
save(p.layout.model(1), model, {"kind": "c3det", "classes": p.classes})
write_json_atomic(p.layout.model_dir(1) / "train.json", {"batch": 1})
n = with_runner(preannotate_batch, root)(root, 2)
with get_client(sync_client=True) as c:
    names = [t.name for t in c.read_task_runs(limit=200)]
print(json.dumps({"images": n, "tasks": names}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prefect_server(tmp_path):
    env = dict(os.environ, PREFECT_SERVER_DIR=str(tmp_path / "server"),
               PREFECT_SERVER_UI_ENABLED="false")
    script = str(REPO / "scripts" / "prefect-server")
    out = subprocess.run([script, "start", str(free_port())], env=env, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    url = out.stdout.strip().split("=", 1)[1]
    yield url
    stop = subprocess.run([script, "stop"], env=env, capture_output=True, text=True)
    assert "stopped" in stop.stdout
    assert subprocess.run([script, "status"], env=env).returncode == 1


def test_fan_out_on_two_dask_workers(tmp_path, prefect_server):
    root = make_project(tmp_path, **{"flows.task_runner": "dask", "flows.dask_workers": 2,
                                     "flows.preannotate_chunk": 2})
    env = cli_env(PREFECT_API_URL=prefect_server)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(root)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["images"] == 4
    names = result["tasks"]
    assert sum(n.startswith("embed-chunk") for n in names) == 2      # one per worker
    assert sum(n.startswith("preannotate-chunk") for n in names) == 2  # 4 images / 2
    ids = json.loads((root / "data/features/ids.json").read_text())["ids"]
    assert len(ids) == 12 and not (root / "data/features/parts").exists()
    pre = json.loads((root / "data/batches/002/preannotations.json").read_text())
    assert len(pre["images"]) == 4
