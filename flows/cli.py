"""`tinyloop`: the command line, `tinyloop NOUN VERB`; noun N's verbs live in
flows/commands/N.py.

Each module there lists its commands in `verbs()` (flows/commands/base.py: `Verb`). This
module builds one parser per noun (its help line names the verbs of that table), resolves
`-C PROJECT` / `--params` once into a `CliProject` and calls the verb's handler with it.
Every command that was top-level before the nouns existed (`tinyloop ingest`, `tinyloop
simulate`, ...) is still accepted under its old name, as a hidden alias of the same verb.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import textwrap

import flows.commands
from flows.commands.base import CliProject, Verb, project_option

DESCRIPTION = """\
tinyloop - an active-learning annotation loop for images full of tiny objects.

Embed and order the unlabeled pool into batches, pre-annotate each batch with an
interactive detector that annotators steer with class-labelled clicks, correct in the
FiftyOne App, retrain, version every iteration with DVC and report the annotation work
saved. Every knob lives in params.yaml; run `tinyloop NOUN --help` for a noun's verbs.
"""

# the nouns in the order `tinyloop --help` lists them, each with what it is for; the verbs
# come from flows/commands/NOUN.py (`verbs()`), so a new verb is a change to that file alone
NOUNS = {
    "data": "get labelled data in and out",
    "model": "train and evaluate the click-steered detector",
    "loop": "run the annotation loop",
    "report": "what the loop saved",
    "app": "the FiftyOne App for annotators",
    "params": "validate params.yaml or show every knob",
}


def all_verbs() -> list[Verb]:
    """Every verb of every module in flows/commands/ (modules without verbs() are helpers)."""
    verbs = []
    for info in sorted(pkgutil.iter_modules(flows.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"flows.commands.{info.name}")
        verbs += getattr(module, "verbs", list)()
    return verbs


def build_parser() -> argparse.ArgumentParser:
    verbs = all_verbs()
    parser = argparse.ArgumentParser(
        prog="tinyloop", description=DESCRIPTION, epilog=_aliases_epilog(verbs),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=None,
                        help="the project's params file (default: PROJECT/params.yaml)")
    parser.add_argument("--project", "-C", default=None,
                        help="project directory, here or after the command (default: the "
                             "folder of --params, else .)")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for verb in verbs:  # the top-level verbs (demo) first: the README starts with them
        if verb.noun is None:
            _add_verb(sub, verb, verb.name, listed=True)
    nouns = {name: _add_noun(sub, name, _noun_help(name, verbs), verbs) for name in NOUNS}
    for verb in verbs:
        if verb.noun is not None:
            _add_verb(nouns[verb.noun], verb, verb.name, listed=True)
        if verb.alias:
            for name in (verb.alias, *verb.other_names):
                _add_verb(sub, verb, name, listed=False)
    return parser


def _noun_help(noun: str, verbs: list[Verb]) -> str:
    """The noun's line: what it is for, then its verbs in the order its module lists them."""
    names = [v.name + (" (the default)" if v.noun_default else "")
             for v in verbs if v.noun == noun]
    return f"{NOUNS[noun]}: {', '.join(names)}"


def _add_noun(sub, name: str, helptext: str, verbs: list[Verb]):
    p = sub.add_parser(name, help=helptext, description=f"tinyloop {name}: {helptext}")
    project_option(p)
    default = next((v for v in verbs if v.noun == name and v.noun_default), None)
    p.set_defaults(verb=default, usage_parser=p)
    return p.add_subparsers(title="verbs", metavar="VERB")


def _add_verb(sub, verb: Verb, name: str, listed: bool) -> None:
    # an alias gets no help: argparse then leaves it out of the listing of commands
    kwargs = {"help": verb.help} if listed else {}
    if listed:   # `tinyloop data import` works as `tinyloop data ingest`
        kwargs["aliases"] = list(verb.other_names)
    formatter = argparse.RawDescriptionHelpFormatter if verb.raw_description else \
        argparse.HelpFormatter
    p = sub.add_parser(name, description=verb.description, formatter_class=formatter,
                       **kwargs)
    verb.add_arguments(p)
    p.set_defaults(verb=verb, usage_parser=p)


def _aliases_epilog(verbs: list[Verb]) -> str:
    aliased = sorted((v for v in verbs if v.alias), key=lambda v: list(NOUNS).index(v.noun))
    pairs = [f"{v.alias} = {v.noun} {v.name}" for v in aliased]
    return textwrap.fill("the old command names still work: " + ", ".join(pairs), 88)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verb = getattr(args, "verb", None)
    if verb is None:  # `tinyloop` or `tinyloop NOUN` alone: say what there is
        getattr(args, "usage_parser", parser).print_help()
        return 0
    project = CliProject.resolve(args.project, args.params, verb.default_project)
    from tinyloop import progress  # bars on a terminal, plain lines elsewhere, or --quiet
    progress.configure(quiet=getattr(args, "quiet", False))
    return int(verb.handler(args, project) or 0)


if __name__ == "__main__":
    sys.exit(main())
