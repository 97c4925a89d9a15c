"""The ``sana-jax`` command line: one module per subcommand in ``sana_jax/commands`` (each provides
``add_parser(subparsers)`` and ``run(args)``).

Every subcommand prints one clear line and exits with status 2 on bad input (a typed error), without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from sana_jax.errors import SanaJaxError

COMMANDS = ("convert", "generate", "refine", "stream", "cache", "train")


class _Parser(argparse.ArgumentParser):
    """argparse, with a refused option reported in one line (the usage is one ``--help`` away); subcommands'
    parsers are of this class too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sana-jax", description="SANA-Video in JAX: convert PyTorch checkpoints, generate and refine video.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"sana_jax.commands.{name}").add_parser(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning  # a warning is one line too (not the file, line and source)
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except SanaJaxError as e:
        print(f"sana-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sana-jax {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
