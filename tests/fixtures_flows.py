"""Tiny projects for the flow tests: synthetic COCO data, a one-epoch CPU schedule."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flows.project.init import init_project, set_params

REPO = Path(__file__).resolve().parents[1]
TINY = {  # seconds-scale settings: 12 images of 96x96, batches of 4, one epoch of 96px crops
    "data.format": "coco", "data.labels": "labels.json", "data.images_dir": ".",
    "data.oriented_labels": None, "data.split_dir": None,
    "data.classes": ["disc", "square", "cross", "ring"], "data.ignore_classes": [],
    "features.num_workers": 0, "features.image_size": 32, "features.batch_size": 8,
    "order.first_batch_size": 4, "order.batch_size": 4,
    "c3det.train.epochs": 1, "c3det.train.crop_size": 96, "c3det.train.batch_size": 2,
    "c3det.train.warmup_iters": 1, "c3det.eval.click_steps": [0, 1],
    "c3det.eval.sessions": 1, "flows.iterations": 2, "flows.push_delay_s": 0.1,
}


def make_dataset(root: Path, n: int = 12) -> Path:
    from tinyloop.synthetic import make_synthetic
    make_synthetic(n, size=(96, 96), objects_per_image=(1, 3), object_size=(10, 18),
                   seed=3, out_dir=root)
    return root


def make_project(tmp: Path, n: int = 12, **overrides) -> Path:
    data = make_dataset(tmp / "dataset", n)
    layout = init_project(tmp / "project", source=str(data),
                          params_overrides={**TINY, **overrides})
    return layout.root


def cli_env(**extra) -> dict:
    env = dict(os.environ)
    env.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": "1", "TINYLOOP_TORCH_THREADS": "1",
                "PREFECT_LOGGING_LEVEL": "WARNING",
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"})
    env.update(extra)
    return env


def tinyloop(*args: str, env: dict | None = None, check: bool = True
             ) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO,
                          env=env or cli_env(), capture_output=True, text=True, timeout=900)
    if check and proc.returncode:
        raise AssertionError(f"tinyloop {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def light_demo_params(**overrides) -> dict:
    """The demo's params (real sample data) with a seconds-scale schedule: batches of 8, one
    epoch, 4 held-out images."""
    from flows.commands.demo import DEMO_PARAMS
    return {**DEMO_PARAMS, "order.first_batch_size": 8, "order.batch_size": 8,
            "c3det.train.epochs": 1, "flows.warm_start_epochs": None,
            "flows.eval_max_images": 4, **overrides}
