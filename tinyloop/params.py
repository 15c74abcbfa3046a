"""Validate `params.yaml` against plain dataclasses, with messages that name the bad key.

Each package declares its knobs as a stdlib `@dataclass` with defaults (c3det/config.py,
features/config.py, ...); `flows/params.py` composes them into the whole file. This module
only knows how to check a YAML mapping against such a dataclass:

    >>> build(TrainParams, {"lr": "fast"}, "c3det.train")
    ParamsError: params.yaml: c3det.train.lr: expected a number, got 'fast'
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

T = TypeVar("T")


class ParamsError(ValueError):
    """params.yaml is wrong; the message names the key and what it should be."""


def build(cls: type[T], raw: Any, where: str = "", file: str = "params.yaml") -> T:
    """Instantiate dataclass `cls` from a mapping, checking every key and value."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{file}: {where or '<top>'}: expected a mapping of keys, "
                          f"got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else \
                f"; allowed keys: {', '.join(fields)}"
            raise ParamsError(f"{file}: {_join(where, key)}: unknown key{hint}")
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = _convert(hints[name], raw[name], _join(where, name), file)
    try:
        obj = cls(**values)
    except TypeError as e:  # a required field without default was left out
        raise ParamsError(f"{file}: {where or '<top>'}: {e}") from None
    check = getattr(obj, "check", None)
    if check is not None:
        problem = check()
        if problem:
            raise ParamsError(f"{file}: {where or '<top>'}: {problem}")
    return obj


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _convert(tp: Any, value: Any, where: str, file: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where, file)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where, file)
            except ParamsError as e:
                errors.append(str(e).split(": ", 2)[-1])
        got = f", got {value!r}"
        if all(e.startswith("expected ") and e.endswith(got) for e in errors):
            # "expected a number or one of 'auto', got 'best'"
            wanted = [e[len("expected "):-len(got)] for e in errors]
            raise ParamsError(f"{file}: {where}: expected {' or '.join(wanted)}{got}")
        raise ParamsError(f"{file}: {where}: {' or '.join(errors)}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ParamsError(f"{file}: {where}: expected one of "
                              f"{', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{file}: {where}: expected a list, got {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_convert(item_tp, v, f"{where}[{i}]", file) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{file}: {where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{file}: {where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{file}: {where}: expected a whole number, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{file}: {where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{file}: {where}: expected text, got {value!r}")
        return value
    raise TypeError(f"params type {tp!r} at {where} is not supported by tinyloop.params")


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
