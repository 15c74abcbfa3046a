"""The annotation-store registry and the one-way arrows inside flows/."""
import ast
import typing
from pathlib import Path

from flows.annotate import stores
from flows.annotate.file_store import FileStore
from flows.project.config import FlowParams
from flows.project.params import Params

FLOWS = Path(__file__).resolve().parents[1] / "flows"
ROOMS = ("project", "annotate", "accounting")   # lowest first


def test_registered_stores_are_the_valid_flows_store_values(tmp_path):
    assert stores.store_names() == ("file", "fiftyone")
    assert typing.get_args(typing.get_type_hints(FlowParams)["store"]) == stores.store_names()
    assert isinstance(stores.open_store(tmp_path, Params()), FileStore)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("flows.")}


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ROOMS else None


def test_no_room_imports_the_conductor_or_a_higher_room():
    conductor = {p.stem for p in FLOWS.glob("*.py")} - {"__init__", "faults"}
    upward = []
    for path in FLOWS.glob("*/*.py"):
        room = path.parent.name
        if room not in ROOMS:
            continue
        for target in _imports(path):
            parts = target.split(".")
            higher = _room(target) and ROOMS.index(_room(target)) > ROOMS.index(room)
            if higher or (len(parts) >= 2 and parts[1] in conductor):
                upward.append(f"{path.relative_to(FLOWS)} -> {target}")
    assert not upward
