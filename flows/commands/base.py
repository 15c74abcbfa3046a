"""What every command module shares: the `Verb` it declares and the `CliProject` it gets.

flows/cli.py resolves `-C PROJECT` and `--params` once into a `CliProject` and calls the
chosen verb's handler with it: `cmd_<noun>_<verb>(args, project) -> exit status`.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable


@dataclass
class CliProject:
    """The project directory a command works on and its params file.

    root: `-C/--project` (before or after the command); else the verb's own default (the
    demo's runs/demo); else the folder of `--params`; else the working directory.
    params_path: `--params` when given, else ROOT/params.yaml. Loop commands run the flows,
    which always read the params.yaml of the project they find at or above root.
    Nothing is read until a handler asks, so a broken params.yaml only stops the commands
    that need it, each with its own error message."""
    root: Path
    params_path: Path

    @classmethod
    def resolve(cls, project: str | None, params: str | None,
                default_project: str | None = None) -> CliProject:
        if project:
            root = Path(project)
        elif default_project:
            root = Path(default_project)
        elif params:
            root = Path(params).resolve().parent
        else:
            root = Path(".")
        return cls(root, Path(params) if params else root / "params.yaml")

    @property
    def layout(self):
        from flows.project.layout import ProjectLayout
        return ProjectLayout(self.root)

    @cached_property
    def params(self):
        """The validated params; the defaults when there is no params file (ParamsError when
        the file is wrong)."""
        from flows.project.params import Params
        return self.require_params() if self.params_path.exists() else Params()

    def require_params(self):
        """The validated params; ParamsError saying how to make one when the file is missing."""
        from flows.project.params import load_params
        return load_params(self.params_path)

    @property
    def params_dir(self) -> Path:
        """Where paths in params.yaml are relative to (data.source): its folder, or the
        project when there is no file."""
        return self.params_path.resolve().parent if self.params_path.exists() else self.root


Handler = Callable[[argparse.Namespace, CliProject], int]


@dataclass(frozen=True)
class Verb:
    """One command, `tinyloop NOUN NAME` (or `tinyloop NAME` when noun is None). Each module
    in flows/commands/ lists its verbs in `verbs()`; flows/cli.py builds the parsers."""
    noun: str | None
    name: str
    handler: Handler
    add_arguments: Callable[[argparse.ArgumentParser], None]
    help: str
    description: str
    alias: str | None = None             # the old top-level name, kept working as it was
    other_names: tuple[str, ...] = ()    # names people type for it (data import = ingest)
    default_project: str | None = None   # the project when no -C is given (see CliProject)
    noun_default: bool = False           # `tinyloop NOUN` alone runs this verb
    raw_description: bool = False        # the description is laid out by hand: keep its lines


def project_option(p: argparse.ArgumentParser, *names: str,
                   help: str = "project directory (default: .)") -> None:
    """`-C/--project` after the command. SUPPRESS: when not given here, the value given
    before the command (or None) is kept instead of being overwritten by a default."""
    p.add_argument("--project", "-C", *names, dest="project", default=argparse.SUPPRESS,
                   help=help)


def quiet_option(p: argparse.ArgumentParser) -> None:
    """`--quiet` for the long commands: no progress bars and no step lines
    (flows/cli.py hands it to tinyloop.progress.configure before the command runs)."""
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress (step lines, bars); results and errors only")
