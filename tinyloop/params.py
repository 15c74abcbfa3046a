"""Validate `params.yaml` against plain dataclasses, with messages that name the bad key.

Each package declares its knobs as a stdlib `@dataclass` with defaults (c3det/config.py,
features/config.py, ...); `flows/project/params.py` composes them into the whole file. This module
checks a YAML mapping against such a dataclass with pydantic: from each dataclass it derives
a strict TypedDict (so the packages themselves stay free of pydantic), pydantic checks every
key and value, each section's `check()` runs as an after-validator, and the result is the
plain dataclass again. pydantic's errors are rewritten into one line naming the key path:

    >>> build(TrainParams, {"lr": "fast"}, "c3det.train")
    ParamsError: params.yaml: c3det.train.lr: expected a number, got 'fast'
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import (AfterValidator, BeforeValidator, ConfigDict, TypeAdapter,
                      ValidationError, with_config)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

T = TypeVar("T")

# strict: a YAML "1" is no number and `true` no count; forbid: a misspelt key is an error,
# not a knob silently left at its default
STRICT = ConfigDict(strict=True, extra="forbid")
CHECK_FAILED = "params_check"  # the error type of a section's check()

# pydantic error type -> what the value should have been, in the words of params.yaml
EXPECTED = {
    "int_type": "a whole number", "int_from_float": "a whole number",
    "float_type": "a number", "bool_type": "true or false", "string_type": "text",
    "list_type": "a list", "dict_type": "a mapping of keys",
}


class ParamsError(ValueError):
    """params.yaml is wrong; the message names the key and what it should be."""


def build(cls: type[T], raw: Any, where: str = "", file: str = "params.yaml") -> T:
    """Instantiate dataclass `cls` from a mapping, checking every key and value."""
    try:
        return _adapter(cls).validate_python({} if raw is None else raw)
    except ValidationError as e:
        raise ParamsError(_message(cls, e.errors(), where, file)) from None


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(_section_type(cls))


def _section_type(cls: type) -> Any:
    """The pydantic type of one params section: a strict TypedDict of `cls`'s fields, every
    key optional (a missing key keeps the dataclass default), turned into `cls` once valid."""
    fields = {name: _field_type(tp) for name, tp in _hints(cls).items()}
    keys = with_config(STRICT)(TypedDict(f"{cls.__name__}Keys", fields, total=False))
    return Annotated[keys, BeforeValidator(_empty_if_none),
                     AfterValidator(functools.partial(_construct, cls))]


def _field_type(tp: Any) -> Any:
    return _section_type(tp) if dataclasses.is_dataclass(tp) else tp


def _empty_if_none(value: Any) -> Any:
    return {} if value is None else value  # `tiling:` with nothing under it = all defaults


def _construct(cls: type, values: dict) -> Any:
    """The dataclass from validated values; its check() is the cross-field rules."""
    try:
        obj = cls(**values)
    except TypeError as e:  # a field without default was left out
        raise _failed(str(e)) from None
    check = getattr(obj, "check", None)
    problem = check() if check is not None else None
    if problem:
        raise _failed(problem)
    return obj


def _failed(problem: str) -> PydanticCustomError:
    # the problem goes in as context, not as the template: pydantic would read any "{...}"
    # in it as a placeholder
    return PydanticCustomError(CHECK_FAILED, "{problem}", {"problem": problem})


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _message(cls: type, errors: list[dict], where: str, file: str) -> str:
    """One line for the first problem; every pydantic error at the same key (one per union
    member: "a number or one of 'auto'") is folded into it."""
    # a misspelt key first: the value under it is then most likely fine
    errors = sorted(errors, key=lambda e: e["type"] != "extra_forbidden")
    key, owner = _key_path(cls, errors[0]["loc"])
    same = [e for e in errors if _key_path(cls, e["loc"])[0] == key]
    return f"{file}: {_join(where, key) or '<top>'}: {_problem(same, owner, key)}"


def _problem(errors: list[dict], owner: type | None, key: str) -> str:
    first = errors[0]
    if first["type"] == "extra_forbidden" and owner is not None:
        return _unknown_key(key.rsplit(".", 1)[-1], owner)
    if first["type"] == CHECK_FAILED:
        return first["msg"]
    wanted = [_expected(e) for e in errors]
    if None in wanted:  # an error without words of ours: pydantic's own
        return first["msg"]
    return f"expected {' or '.join(dict.fromkeys(wanted))}, got {first['input']!r}"


def _expected(error: dict) -> str | None:
    if error["type"] == "literal_error":
        return f"one of {error['ctx']['expected']}"
    return EXPECTED.get(error["type"])


def _unknown_key(key: str, owner: type) -> str:
    fields = list(_hints(owner))
    close = difflib.get_close_matches(key, fields, n=1)
    return f"unknown key (did you mean '{close[0]}'?)" if close else \
        f"unknown key; allowed keys: {', '.join(fields)}"


def _key_path(cls: type, loc: tuple) -> tuple[str, type | None]:
    """pydantic's error location as a params.yaml key path ("c3det.train.lr",
    "data.classes[1]") and the dataclass that owns its last key. pydantic also puts union
    members in the location ("float", "literal['auto']"); they are no keys and are dropped."""
    path, tp, owner = "", cls, None
    for item in loc:
        if isinstance(item, int):
            path += f"[{item}]"
        elif dataclasses.is_dataclass(tp):
            path, owner, tp = _join(path, item), tp, _hints(tp).get(item)
    return path, owner


def _join(where: str, key: Any) -> str:
    if not key:
        return where
    return f"{where}.{key}" if where else str(key)


def to_dict(obj: Any) -> Any:
    """The dataclass tree back to plain YAML-able data."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run 'tinyloop init' to create a project with "
                          "a default params.yaml") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    return raw or {}
