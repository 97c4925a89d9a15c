"""The ``sana-jax`` command line: one module per subcommand in ``sana_jax/commands`` (each provides
``add_parser(subparsers)`` and ``run(args)``).

Every subcommand prints one clear line and exits with status 2 on bad input (a typed error), without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
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
        _join_processes(args)
        return args.run(args)
    except SanaJaxError as e:
        return _failed(args.command, str(e), 2)
    except KeyboardInterrupt:
        return _failed(args.command, "interrupted", 130)
    except Exception as e:
        if not _several_processes():
            raise
        traceback.print_exc()
        return _failed(args.command, f"{type(e).__name__}: {e}", 1)


def _join_processes(args: argparse.Namespace) -> None:
    """A multi-process run (``--coordinator`` … or ``SANA_JAX_*``) joins before the command checks anything, so an
    error found by one process from then on ends all of them."""
    from sana_jax.commands.hosts import wants_distributed

    if wants_distributed(args):
        from sana_jax.parallel import multihost

        multihost.joined(args.coordinator, args.num_processes, args.process_id, command=f"sana-jax {args.command}")


def _several_processes() -> bool:
    if "jax" not in sys.modules:  # nothing started it: one process
        return False
    from sana_jax.parallel import multihost

    return multihost.is_initialized()


def _failed(command: str, message: str, status: int) -> int:
    """One line and ``status``; in a multi-process run the other processes are told (they print the line too, naming
    this process) and this one ends at once instead of waiting for them in ``jax.distributed``'s shutdown."""
    print(f"sana-jax {command}: error: {message}" if status != 130 else f"sana-jax {command}: interrupted",
          file=sys.stderr)
    if _several_processes():
        from sana_jax.parallel import multihost

        multihost.report_failure(message)
        multihost.exit_now(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
