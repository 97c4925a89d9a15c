"""The ``sana-jax`` command line: one module per subcommand in ``sana_jax/commands`` (each provides
``add_parser(subparsers)`` and ``run(args)``).

Every subcommand prints one clear line and exits with status 2 on bad input (a typed error), without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sana_jax.errors import SanaJaxError

COMMANDS = ("convert", "generate", "refine", "stream", "cache", "train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sana-jax", description="SANA-Video in JAX: convert PyTorch checkpoints, generate and refine video.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"sana_jax.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
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
