"""The ``table`` and ``figure`` subcommands: ``python -m neuralode table table1 [runs...]``,
``python -m neuralode figure fig3 [run]``.

Each artefact is a module ``neuralode.paper.<name>`` with ``main(argv)`` and a row of
:data:`neuralode.paper.registry.ARTEFACTS`, which says whether it is a table or a figure.
"""

from __future__ import annotations

import importlib
import sys

from neuralode.errors import UserError
from neuralode.paper.registry import made


def available(kind: str) -> list[str]:
    """The names ``python -m neuralode <kind>`` takes: the registry's, and ``table report``."""
    return sorted([a.name for a in made(kind)] + (["report"] if kind == "table" else []))


def dispatch(kind: str, argv: list[str]) -> None:
    names = available(kind)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m neuralode {kind} <name> [options]\n\n{kind}s: {', '.join(names)}\n\n"
              f"`python -m neuralode {kind} <name> --help` shows a {kind}'s options.")
        sys.exit(0 if argv else 2)
    name, rest = argv[0], argv[1:]
    if name not in names:
        print(f"error: unknown {kind} {name!r}; available: {', '.join(names)}", file=sys.stderr)
        sys.exit(2)
    try:
        importlib.import_module(f"neuralode.paper.{name}").main(rest)
    except UserError as error:  # a broken run file, a setting: one line, as train and eval say it
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        if error.filename is None:
            raise
        print(f"error: cannot write or read {error.filename}: {error.strerror}; check --out and the run folders",
              file=sys.stderr)
        sys.exit(2)


def table_cli() -> None:
    """``python -m neuralode table <name> [arguments]`` (arguments after the name in sys.argv)."""
    dispatch("table", sys.argv[1:])


def figure_cli() -> None:
    """``python -m neuralode figure <name> [arguments]``."""
    dispatch("figure", sys.argv[1:])
