"""One module per group of `tinyloop` subcommands.

Each module here defines `register(subparsers)`, which adds its subcommands with
`subparsers.add_parser(name, help=..., description=...)` and sets `func=callable(args) -> int`
with `parser.set_defaults(func=...)`. flows/cli.py finds the modules by itself.
"""
