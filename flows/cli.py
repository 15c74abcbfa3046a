"""`tinyloop`: the command line. Subcommands live in flows/commands/, one module per group."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import flows.commands

DESCRIPTION = """\
tinyloop - an active-learning annotation loop for images full of tiny objects.

Embed and order the unlabeled pool into batches, pre-annotate each batch with an
interactive detector that annotators steer with class-labelled clicks, correct in the
FiftyOne App, retrain, version every iteration with DVC and report the annotation work
saved. Every knob lives in params.yaml; run `tinyloop <command> --help` for details.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinyloop", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml",
                        help="the project's params file (default: %(default)s)")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(flows.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"flows.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
