"""Running ``sana-jax`` as two processes joined by ``jax.distributed`` (CPU, one device each, gloo collectives), as
a user starts it on two hosts: the same command line plus ``--coordinator localhost:PORT --num-processes 2
--process-id I``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]


class ProcessResult(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def two_process_env() -> dict:
    """The test environment for a child: CPU with one device per process (the 8 fake devices of the pytest process
    removed), the package importable, the compile cache and XLA flags inherited."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", TQDM_DISABLE="1")
    env["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "")
    return env


def run_two(argv: list[str], argv_1: list[str] | None = None, *, timeout: float = 600) -> list[ProcessResult]:
    """``sana-jax *argv`` in processes 0 and 1 (process 1 runs ``argv_1`` when given); returns both results."""
    port, env = free_port(), two_process_env()
    procs = []
    for pid, args in enumerate((argv, argv if argv_1 is None else argv_1)):
        cmd = [sys.executable, "-m", "sana_jax.cli", *map(str, args), "--coordinator", f"localhost:{port}",
               "--num-processes", "2", "--process-id", str(pid)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                      cwd=ROOT))
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append(ProcessResult(p.returncode, out, err))
    return results


def run_one(argv: list[str], *, timeout: float = 600) -> ProcessResult:
    """``sana-jax *argv`` as one process with the children's environment (one CPU device): the reference a
    two-process run is compared with. Its single-device programs (text encoders, VAEs) have the same cache key as
    the children's, so they find them in the persistent compilation cache."""
    p = subprocess.run([sys.executable, "-m", "sana_jax.cli", *map(str, argv)], capture_output=True, text=True,
                       env=two_process_env(), cwd=ROOT, timeout=timeout)
    assert p.returncode == 0, p.stderr[-4000:]
    return ProcessResult(p.returncode, p.stdout, p.stderr)


def assert_both_ok(results: list[ProcessResult]) -> None:
    for pid, r in enumerate(results):
        assert r.returncode == 0, f"process {pid} failed ({r.returncode}):\n{r.stderr[-4000:]}"
