"""`tinyloop params check|show`: validate params.yaml, print every knob with its value."""
from __future__ import annotations

import argparse
import sys

from flows.commands.base import CliProject, Verb


def verbs() -> list[Verb]:
    return [
        Verb("params", "check", cmd_params_check, _no_arguments,
             help="validate params.yaml; exit 1 naming the bad key",
             description="Validate params.yaml (--params, else PROJECT/params.yaml): every "
                         "unknown key or bad value is named with its path; exit 1 on a "
                         "problem."),
        Verb("params", "show", cmd_params_show, _no_arguments,
             help="print every knob with its value (the defaults without a params.yaml)",
             description="Print the full set of knobs: params.yaml's values, the defaults "
                         "for every key it leaves out (all defaults when there is none)."),
    ]


def _no_arguments(p: argparse.ArgumentParser) -> None:
    pass


def cmd_params_check(args: argparse.Namespace, project: CliProject) -> int:
    from tinyloop.params import ParamsError
    try:
        params = project.require_params()
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{project.params_path}: ok")
    from flows.selection import params_notes  # what the values mean for this pool
    for note in params_notes(project.layout, params):
        print(f"note: {note}")
    return 0


def cmd_params_show(args: argparse.Namespace, project: CliProject) -> int:
    import yaml
    from tinyloop.params import ParamsError, to_dict
    try:
        params = project.params
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(yaml.safe_dump(to_dict(params), sort_keys=False), end="")
    return 0
