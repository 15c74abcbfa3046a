"""Which YOLO model a `c3det.yolo.model` name means, without importing ultralytics.

A name is an ultralytics model yaml with the scale letter in it, as ultralytics spells it:
`yolov8n-p2.yaml` is `yolov8-p2.yaml` at scale n (`yolo11s-obb.yaml`: yolo11-obb.yaml at
scale s). It is looked for, in this order, as a path to a yaml file, among the yamls that
ship here (c3det/yolo/*.yaml: `yolov8-obb-p2.yaml`, oriented boxes with a P2 output), and
among the yamls in the installed ultralytics package (cfg/models/**). No weight file is
involved: the machine is offline, every model is trained here from its yaml.

The task (axis-aligned "detect" or oriented "obb") is read from the yaml's last head layer,
as ultralytics does (`guess_model_task`): `params.yaml` validation says early when
`oriented: true` names an axis-aligned model, and the other way round.

`is_yolo_checkpoint(path)` tells a YOLO model.pt from a c3det one without unpickling it.
"""
from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
TASKS = {"detect": "detect", "v10detect": "detect", "obb": "obb", "obb26": "obb"}
# ultralytics' rule (nn/tasks.py yaml_model_load, guess_model_scale)
_SCALE_IN_NAME = re.compile(r"(\d+)([nslmx])(.+)?$")
_SCALE_LETTER = re.compile(r"yolo(e-)?[v]?\d+([nslmx])")
DEFAULT = "yolov8n-p2.yaml"


class ModelNameError(ValueError):
    """A `c3det.yolo.model` that names no usable model yaml; the message says what would."""


@dataclass(frozen=True)
class ModelSpec:
    name: str        # as given in params.yaml
    file: Path       # the yaml file that defines the architecture
    arg: str         # what ultralytics gets as `model` (keeps the scale letter)
    task: str        # "detect" | "obb"
    scale: str       # n/s/m/l/x, "" for a yaml without scales

    @property
    def oriented(self) -> bool:
        return self.task == "obb"


def ultralytics_dir() -> Path | None:
    """The installed ultralytics package directory (found, not imported), or None."""
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


@functools.cache
def _shipped_yamls() -> dict[str, Path]:
    """Model yamls by file name: ours first, then ultralytics' (ours win on a clash)."""
    found: dict[str, Path] = {}
    root = ultralytics_dir()
    if root is not None:
        for path in sorted((root / "cfg" / "models").rglob("*.yaml")):
            found.setdefault(path.name, path)
    for path in sorted(HERE.glob("*.yaml")):
        found[path.name] = path
    return found


def known_models() -> list[str]:
    """The shipped detect / OBB yamls at scale n, for error messages."""
    names = []
    for name, path in sorted(_shipped_yamls().items()):
        try:
            task = _task(path)
        except ModelNameError:
            continue
        if task and ("yoloe" not in name and "world" not in name):
            stem = Path(name).stem
            names.append(_with_scale(stem, "n") + ".yaml" if _has_scales(path) else name)
    return names


def _with_scale(stem: str, letter: str) -> str:
    """yolov8-p2 -> yolov8n-p2: the letter after the version number."""
    return re.sub(r"(\d+)(-|$)", rf"\g<1>{letter}\2", stem, count=1)


def find_model(name: str, base: str | Path | None = None) -> ModelSpec:
    """The model a params.yaml name means; ModelNameError when none (or not detect / OBB).

    `base`: the directory a relative path is taken from (the project root)."""
    if not name.endswith((".yaml", ".yml")):
        raise ModelNameError(f"{name!r} is not a model yaml: name one (e.g. {DEFAULT}, "
                             "yolo11n-obb.yaml) or give the path of a .yaml file; the machine "
                             "is offline, so no .pt weights can be fetched")
    as_path = Path(name) if base is None else Path(base) / name
    if "/" in name or as_path.is_file():
        if not as_path.is_file():
            raise ModelNameError(f"model yaml {as_path} not found")
        file, arg = as_path.resolve(), str(as_path.resolve())
    else:
        file, arg = _shipped(name)
    task = _task(file)
    if task is None:
        raise ModelNameError(f"{name}: its last layer is no detection head (Detect or OBB); "
                             "tinyloop trains axis-aligned (detect) or oriented (OBB) "
                             f"models, e.g. {DEFAULT} or yolov8n-obb-p2.yaml")
    match = _SCALE_LETTER.search(Path(name).stem)
    scale = match.group(2) if match else ""
    if _has_scales(file) and not scale:
        example = _with_scale(Path(name).stem, "n") + ".yaml"
        raise ModelNameError(f"{name}: name a scale, e.g. {example} (n/s/m/l/x after the "
                             "version number)")
    return ModelSpec(name, file, arg, task, scale)


def _shipped(name: str) -> tuple[Path, str]:
    yamls = _shipped_yamls()
    if not yamls:
        raise ModelNameError(f"{name}: the ultralytics package is not installed "
                             "(pip install ultralytics)")
    unified = _SCALE_IN_NAME.sub(r"\1\3", Path(name).stem, count=1) + Path(name).suffix
    for candidate in (name, unified):
        if candidate in yamls:
            path = yamls[candidate]
            # ultralytics finds its own yamls by name; ours it gets by path (the scale
            # letter stays in the name, ultralytics strips it to find the file)
            arg = str(path.parent / name) if path.parent == HERE else name
            return path, arg
    raise ModelNameError(f"unknown model yaml {name!r}; for tiny objects {DEFAULT} or "
                         "yolo26n-p2.yaml (oriented boxes: yolov8n-obb-p2.yaml); every "
                         f"detect/OBB model here: {', '.join(known_models())} (any scale "
                         "n/s/m/l/x); or the path of a .yaml file")


@functools.cache
def _load(path: Path) -> dict:
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ModelNameError(f"{path}: not a readable model yaml ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("head"), list) or not doc["head"]:
        raise ModelNameError(f"{path}: not an ultralytics model yaml (no `head:` layers)")
    return doc


def _task(path: Path) -> str | None:
    """"detect" / "obb" from the last head layer's module, None for any other head."""
    last = _load(path)["head"][-1]
    module = str(last[-2]).lower() if isinstance(last, list) and len(last) >= 2 else ""
    return TASKS.get(module)


def _has_scales(path: Path) -> bool:
    return bool(_load(path).get("scales"))


def is_yolo_checkpoint(path: str | Path) -> bool:
    """Is `path` an ultralytics checkpoint (True) rather than a c3det one (False)?

    torch.save writes a zip whose data.pkl names the classes it pickles; an ultralytics
    model pickles `ultralytics.nn.tasks...`, a c3det checkpoint only tensors and builtins.
    Nothing is unpickled."""
    from c3det.detectors import checkpoint_mentions
    return checkpoint_mentions(path, b"ultralytics")
