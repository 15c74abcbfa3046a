"""`tinyloop init`: make a directory a tinyloop project (git + DVC + params + pipeline).

    tinyloop init runs/demo --source data/sample/hit-uav

does, idempotently (running it again repairs what is missing and changes nothing else):
git init; dvc init; `dvc config core.analytics false`; a default DVC remote (a local
directory, `.dvc-remote` unless told otherwise; `s3://bucket/path`, `gs://...`, `ssh://...`
work the same once the matching `dvc[s3]` etc. extra is installed); params.yaml (the
package's defaults, with `data.source` set when given, and the dataset's format, folders and
classes as `tinyloop.formats.detect` finds them, said out loud) and dvc.yaml; a .gitignore
for the loop's private state and for every file DVC owns; one initial commit of init's own
files.

Init commits only the files it writes, never `git add -A`: a project re-initialised after
`tinyloop demo --stats-only` or `tinyloop ingest` already holds data/pool, and a pool that
git tracks can no longer be recorded by DVC ("output 'data/pool' is already tracked by SCM").
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from flows.project.layout import ProjectLayout
from flows.project.versioning import VersioningError, run

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
# The loop's private state, plus every file DVC owns, so that not even a `git add -A` by hand
# puts data into git: the dvc.yaml stage outputs (hashes in dvc.lock) and the `dvc add`ed
# batch and model directories. Their .dvc pointers must stay visible: a trailing slash
# matches directories only, and `[0-9]*` cannot match an empty name (DVC reads
# `/data/batches/*/` as ignoring data/batches itself and then never finds 001.dvc).
GITIGNORE_LINES = [
    "/.tinyloop/", "/.dvc-remote/", "__pycache__/",
    "/data/pool", "/data/features", "/data/order.json", "/data/next",
    "/data/batches/[0-9]*/", "/models/iter-[0-9]*/", "/models/current/model.pt",
    "/reports/index.html", "/reports/img",
]
# what init writes and commits (dvc init adds .dvc/config, .dvc/.gitignore, .dvcignore)
INIT_FILES = ["params.yaml", "dvc.yaml", ".gitignore", ".dvcignore", ".dvc/config",
              ".dvc/.gitignore"]


def template(name: str) -> Path:
    """The repository's params.yaml / dvc.yaml that a new project starts from."""
    path = PACKAGE_ROOT / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: tinyloop init needs the source checkout's "
                                f"{name} (reinstall from the repository)")
    return path


def write_params(dest: Path, source: str | None, data: dict | None = None) -> None:
    """Copy the default params.yaml, pointing data.source at `source` when given and
    setting the other `data` keys given (its comments stay)."""
    text = template("params.yaml").read_text(encoding="utf-8")
    values = {**({"source": source} if source is not None else {}), **(data or {})}
    dest.write_text(set_data_keys(text, values), encoding="utf-8")


def set_data_keys(text: str, values: dict) -> str:
    """params.yaml text with `data.<key>: value` set for each of `values`: the key's line
    rewritten in place (its comment kept), a missing key added before `labels:`."""
    import yaml
    lines = text.splitlines(keepends=True)
    start = lines.index("data:\n") + 1
    end = next((i for i in range(start, len(lines)) if lines[i][:1] not in (" ", "\n")),
               len(lines))
    for key, value in values.items():
        flow = yaml_flow(value)
        at = next((i for i in range(start, end) if lines[i].startswith(f"  {key}:")), None)
        if at is None:
            at = next((i for i in range(start, end) if lines[i].startswith("  labels:")), end)
            lines.insert(at, f"  {key}: {flow}\n")
            end += 1
            continue
        comment = lines[at].partition("  #")[2]
        lines[at] = f"  {key}: {flow}" + (f"  #{comment}" if comment else "\n")
    out = "".join(lines)
    written = yaml.safe_load(out)["data"]
    wrong = {k: written.get(k) for k, v in values.items() if written.get(k) != v}
    if wrong:
        raise ValueError(f"params.yaml: setting data keys {values} read back as {wrong}")
    return out


def yaml_flow(value) -> str:
    """`value` as one line of YAML: null, [dog, cat], JPEGImages, 'a: b'."""
    import yaml
    return yaml.safe_dump([value], default_flow_style=True, width=10**6).strip()[1:-1]


def detected_data_keys(source: Path, say: Callable[[str], None] | None) -> dict:
    """The params.yaml `data` keys of the dataset at `source` (format, folders, classes),
    as `tinyloop.formats.detect` finds them; each finding is said, so people can check it."""
    import yaml
    from tinyloop.formats.detect import detect_layout
    say = say or (lambda line: None)
    defaults = yaml.safe_load(template("params.yaml").read_text(encoding="utf-8"))["data"]
    found = detect_layout(source, tuple(defaults.get("ignore_classes") or ()))
    if found is None:
        say(f"no images found under {source}: params.yaml keeps the default data layout "
            "(`tinyloop ingest` says where it looked)")
        return {}
    keys = found.data_params()
    if set(keys.get("classes", ())) == set(defaults.get("classes") or ()):
        keys.pop("classes")   # the same classes: keep the template's order (class indices)
    say(f"detected {found.describe()}")
    if "classes" in keys:
        say(f"classes ({len(found.classes)}, from {found.classes_from}): "
            f"{', '.join(found.classes)}")
    for note in found.notes:
        say(f"note: {note}")
    changed = [k for k, v in keys.items() if defaults.get(k, _UNSET) != v]
    if changed:
        say("params.yaml data: " + ", ".join(f"{k}: {yaml_flow(keys[k])}" for k in changed))
    return keys


_UNSET = object()


def init_project(root: str | Path, *, source: str | None = None,
                 remote: str | None = None, params_overrides: dict | None = None,
                 say: Callable[[str], None] | None = print) -> ProjectLayout:
    """Create or repair a project at `root`; returns its layout.

    `source` (the raw dataset) is stored as an absolute path unless it lies inside the
    project, so `dvc repro` finds it from anywhere; a new params.yaml gets the dataset's
    format, folders and classes as detected (`detected_data_keys`, reported through
    `say`). `params_overrides` maps dotted keys to values written into params.yaml (used
    by the demo for its small schedule).
    """
    layout = ProjectLayout(Path(root).resolve())
    layout.root.mkdir(parents=True, exist_ok=True)
    if source is not None:
        src = Path(source).resolve()
        if not src.exists():
            raise FileNotFoundError(f"dataset {source} does not exist; pass --source DIR "
                                    "pointing at the images and labels")
        try:
            source = str(src.relative_to(layout.root))
        except ValueError:
            source = str(src)
    if not (layout.root / ".git").exists():
        run(layout, "git", "init", "-q")
    if not (layout.root / ".dvc").exists():
        run(layout, "dvc", "init", "-q")
    run(layout, "dvc", "config", "core.analytics", "false")
    if not layout.params.exists():
        detected = detected_data_keys(src, say) if source is not None else {}
        write_params(layout.params, source, detected)
    if params_overrides:
        set_params(layout.params, params_overrides)
    if not layout.dvc_yaml.exists():
        shutil.copyfile(template("dvc.yaml"), layout.dvc_yaml)
    write_gitignore(layout)
    set_remote(layout, remote or _params_remote(layout))
    layout.state.mkdir(exist_ok=True)
    mine = [f for f in INIT_FILES if (layout.root / f).exists()]
    run(layout, "git", "add", "--", *mine)
    if run(layout, "git", "diff", "--cached", "--quiet", "--", *mine, check=False).returncode:
        run(layout, "git", "commit", "-q", "-m", "tinyloop init", "--", *mine)
    return layout


def write_gitignore(layout: ProjectLayout) -> None:
    """Append the GITIGNORE_LINES the project's .gitignore lacks (repairs older projects)."""
    gi = layout.root / ".gitignore"
    have = set(gi.read_text(encoding="utf-8").splitlines()) if gi.exists() else set()
    missing = [line for line in GITIGNORE_LINES if line not in have]
    if missing:
        text = gi.read_text(encoding="utf-8") if gi.exists() else ""
        sep = "" if not text or text.endswith("\n") else "\n"
        gi.write_text(text + sep + "\n".join(missing) + "\n", encoding="utf-8")


def _params_remote(layout: ProjectLayout) -> str:
    import yaml
    doc = yaml.safe_load(layout.params.read_text(encoding="utf-8")) or {}
    return (doc.get("project") or {}).get("dvc_remote") or ".dvc-remote"


def set_remote(layout: ProjectLayout, url: str) -> None:
    """Make `url` the default DVC remote `storage` (a relative path = inside the project)."""
    if "://" not in url:
        path = Path(url)
        (path if path.is_absolute() else layout.root / path).mkdir(parents=True, exist_ok=True)
    run(layout, "dvc", "remote", "add", "-f", "-d", "storage", url)


def set_params(path: Path, overrides: dict) -> None:
    """Set dotted keys (`c3det.train.epochs`) in params.yaml, keeping the rest as written."""
    import yaml
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for key, value in overrides.items():
        node = doc
        *parents, last = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = value
    from tinyloop.atomic import write_text_atomic
    write_text_atomic(path, yaml.safe_dump(doc, sort_keys=False))


def find_root(start: str | Path = ".") -> Path:
    """The nearest directory at or above `start` with a params.yaml and dvc.yaml."""
    here = Path(start).resolve()
    for d in (here, *here.parents):
        if (d / "params.yaml").exists() and (d / "dvc.yaml").exists() and (d / ".dvc").exists():
            return d
    raise FileNotFoundError(f"{here} is not inside a tinyloop project (no params.yaml + "
                            "dvc.yaml + .dvc above it); run `tinyloop init DIR` first")


__all__ = ["init_project", "set_params", "set_remote", "find_root", "VersioningError"]
