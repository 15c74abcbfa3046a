"""Import ultralytics with nothing reaching the network.

ultralytics checks connectivity, syncs settings, downloads fonts for its plots, auto-installs
missing packages with pip and fetches yolo11n.pt for its AMP check. Here none of that can
work, and a failed attempt costs time or an exception. The environment variables below are
read by ultralytics at import, so `ultralytics()` sets them before the first import and then
turns the remaining switches off in its settings (stored under `config_dir`, not in $HOME).
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CONFIG_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tinyloop-ultralytics"


def ultralytics(config_dir: str | os.PathLike | None = None):
    """The ultralytics module, imported offline (idempotent)."""
    os.environ["YOLO_OFFLINE"] = "1"          # is_online() -> False: no downloads, no hub
    os.environ["YOLO_AUTOINSTALL"] = "0"      # never pip-install a missing requirement
    os.environ.setdefault("YOLO_VERBOSE", "0")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir or DEFAULT_CONFIG_DIR))
    Path(os.environ["YOLO_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)
    import ultralytics as ul
    from ultralytics.utils import SETTINGS
    # no telemetry, no logger integrations (its `dvc` one would write into our DVC repo)
    off = ("sync", "hub", "wandb", "mlflow", "tensorboard", "clearml", "comet", "dvc",
           "neptune", "raytune", "vscode_msg", "openvino_msg")
    SETTINGS.update({k: False for k in off if k in SETTINGS})
    return ul
