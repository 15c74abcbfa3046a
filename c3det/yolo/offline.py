"""Import ultralytics with nothing reaching the network.

ultralytics checks connectivity, syncs settings, downloads fonts for its plots, auto-installs
missing packages with pip and fetches yolo11n.pt for its AMP check. Here none of that can
work, and a failed attempt costs time or an exception. The environment variables below are
read by ultralytics at import, so `ultralytics()` sets them before the first import and then
turns the remaining switches off in its settings (stored under `config_dir`, not in $HOME).

Two checks ignore YOLO_OFFLINE and are replaced here (`_no_network_checks`):
- `check_font` (run by every dataset check, even with plots off) asks github.com whether
  Arial.ttf exists (`is_url(check=True)`, an HTTP HEAD) before downloading it; here it
  returns a font already on disk (matplotlib's DejaVuSans at worst) and never asks;
- the trainer's `check_amp` compares fp32 and AMP outputs of a downloaded yolo26n.pt; here
  AMP is decided by the caller (c3det.yolo.train: params `amp` and a CUDA device), so the
  check just confirms a CUDA device.

One more side effect is undone: ultralytics' `select_device` (run by every trainer,
validator and predictor) sets torch's thread count to min(8, CPUs - 1), overriding the
process's choice (TINYLOOP_TORCH_THREADS, a benchmark's --threads); here it keeps it.

And one name is added: the ImageNet EfficientNet-Lite backbone that model yamls such as
yolov8n-lite0-p2.yaml build through ultralytics' TorchVision layer (c3det.yolo.lite_backbone).
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
    _no_network_checks()
    _keep_torch_threads()
    from c3det.yolo import lite_backbone
    lite_backbone.register()   # a model yaml may name the ImageNet EfficientNet-Lite backbone
    return ul


def local_font(font: str = "Arial.ttf") -> Path:
    """A font file on disk for `font`: ultralytics' config dir, a matplotlib system font of
    that name, else matplotlib's bundled DejaVuSans (labels on plots, never a download)."""
    from matplotlib import font_manager
    from ultralytics.utils import USER_CONFIG_DIR
    name = Path(font).name
    if (USER_CONFIG_DIR / name).exists():
        return USER_CONFIG_DIR / name
    matches = [f.fname for f in font_manager.fontManager.ttflist if name in f.fname]
    return Path(matches[0] if matches else font_manager.findfont("DejaVu Sans"))


def amp_without_download(model) -> bool:
    """The trainer's AMP check without its downloaded reference model: AMP on CUDA only."""
    return next(model.parameters()).device.type == "cuda"


def _no_network_checks() -> None:
    import ultralytics.data.utils as data_utils
    import ultralytics.engine.trainer as trainer
    import ultralytics.utils.checks as checks
    import ultralytics.utils.plotting as plotting
    for module in (checks, data_utils, plotting):   # each imported the name itself
        module.check_font = local_font
    trainer.check_amp = amp_without_download


def _keep_torch_threads() -> None:
    import ultralytics.engine.predictor as predictor
    import ultralytics.engine.trainer as trainer
    import ultralytics.engine.validator as validator
    import ultralytics.nn.autobackend as autobackend
    import ultralytics.utils.torch_utils as torch_utils
    real = getattr(torch_utils.select_device, "__wrapped__", torch_utils.select_device)

    def select_device(*args, **kwargs):
        import torch
        threads = torch.get_num_threads()
        try:
            return real(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
    select_device.__wrapped__ = real
    for module in (torch_utils, trainer, predictor, validator, autobackend):
        if hasattr(module, "select_device"):   # each imported the name itself
            module.select_device = select_device
