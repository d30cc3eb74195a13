"""Command line: ``python -m neuralode <subcommand> [arguments]``.

Hydra has no subcommands, so this picks one by the first word and hands it the rest of the
command line: ``python -m neuralode train experiment=mnist_odenet seed=3``. Each subcommand is
a ``"module:function"`` imported only when used; later ones (``table``, ``figure``) add a line.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("neuralode.train.cli:train_cli", "train an experiment: train experiment=mnist_odenet [key=value ...] [-m]"),
    "eval": ("neuralode.train.cli:eval_cli", "test metrics of a checkpoint: eval ckpt=<file or run dir>"),
    "table": ("neuralode.paper.cli:table_cli", "a table of the paper from runs: table <name> [options]"),
    "figure": ("neuralode.paper.cli:figure_cli", "a figure of the paper: figure <name> [options]"),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"  {name:<{width}}  {help_text}" for name, (_, help_text) in SUBCOMMANDS.items()]
    return (
        "usage: python -m neuralode <subcommand> [arguments]\n\nsubcommands:\n" + "\n".join(lines)
        + "\n\n`python -m neuralode <subcommand> --help` shows a subcommand's options."
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if argv else 2)
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"error: unknown subcommand {name!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    module, function = SUBCOMMANDS[name][0].split(":")
    sys.argv = [f"neuralode {name}", *rest]  # the subcommand (Hydra) reads sys.argv
    getattr(importlib.import_module(module), function)()


if __name__ == "__main__":
    main()
