"""The options every model-running subcommand shares for meshes and several processes: ``--mesh``,
``--coordinator``, ``--num-processes``, ``--process-id`` (the runtime side is :mod:`sana_jax.parallel.multihost`)."""

from __future__ import annotations

import argparse
import contextlib
import os

from sana_jax.commands.options import POSITIVE, integer


def add_args(parser: argparse.ArgumentParser, mesh_help: str) -> None:
    """``--mesh`` (``mesh_help`` says what the command shards) and the three multi-process options."""
    parser.add_argument("--mesh", default=None, help=mesh_help)
    group = parser.add_argument_group(
        "several processes / hosts",
        "Start the same command on every host (or process) with these options, or with the environment variables "
        "SANA_JAX_COORDINATOR, SANA_JAX_NUM_PROCESSES and SANA_JAX_PROCESS_ID; --mesh then spans every process's "
        "devices, only process 0 writes files, and an error in one process ends all of them (docs/scaling.md)")
    group.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="address of process 0's coordinator for jax.distributed (every process gives the same)")
    group.add_argument("--num-processes", type=POSITIVE, default=None, help="how many processes take part")
    group.add_argument("--process-id", type=integer(0), default=None, help="this process's index, 0 … N − 1")


def wants_distributed(args: argparse.Namespace) -> bool:
    """Whether the options or the ``SANA_JAX_*`` variables ask for a multi-process run."""
    flags = (getattr(args, "coordinator", None), getattr(args, "num_processes", None),
             getattr(args, "process_id", None))
    return any(f is not None for f in flags) or "SANA_JAX_COORDINATOR" in os.environ


def mesh_from_args(args: argparse.Namespace):
    """The ``--mesh`` mesh over every process's devices (None without); ``sana_jax.cli.main`` has joined the
    processes of a multi-process run before the command started."""
    if not getattr(args, "mesh", None):
        return None
    from sana_jax.parallel import make_mesh

    return make_mesh(args.mesh)


@contextlib.contextmanager
def one_writer():
    """``with one_writer() as writer:`` — ``writer`` is True in the process that writes the run's files (process 0;
    always in a one-process run); on leaving the block every process waits until process 0 has written them."""
    from sana_jax.parallel import multihost

    yield multihost.is_writer()
    multihost.written()


def say(*args, **kwargs) -> None:
    """``print`` in process 0 only (every process of a multi-process run would print the same line)."""
    from sana_jax.parallel.multihost import is_writer

    if is_writer():
        print(*args, **kwargs)
