"""`tinyloop params check|show`: validate params.yaml, print every knob with its value."""
from __future__ import annotations

import argparse
import sys

import yaml

from tinyloop.params import ParamsError, to_dict


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("params", help="validate params.yaml or show every knob",
                       description="Validate params.yaml (every unknown key or bad value is "
                                   "named) or print the full set of knobs with defaults.")
    p.add_argument("action", choices=["check", "show"],
                   help="check: validate and exit 1 on a problem; show: print all values")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flows.params import Params, load_params
    try:
        params = load_params(args.params) if args.action == "check" or \
            _exists(args.params) else Params()
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.action == "check":
        print(f"{args.params}: ok")
    else:
        print(yaml.safe_dump(to_dict(params), sort_keys=False), end="")
    return 0


def _exists(path: str) -> bool:
    from pathlib import Path
    return Path(path).exists()
