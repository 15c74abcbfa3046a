"""The `tinyloop` verbs, one module per noun: data, model, loop, report, app, params (demo alone).

Each module here lists its commands in `verbs() -> list[Verb]` (flows/commands/base.py):
noun, name, `cmd_<noun>_<verb>(args, project) -> int`, a function adding the verb's
arguments, help and description, and `alias`, the old top-level name kept working.
flows/cli.py finds the modules by itself, resolves -C / --params into the `CliProject`
every handler gets, and builds the parsers; modules without `verbs()` are helpers.
"""
