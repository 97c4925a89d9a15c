"""One command on several processes (hosts) joined by ``jax.distributed``: the command-line flags, the start, results
brought to every host, one writer, and one failure ending every process.

Every subcommand that runs models takes the same four options (``sana_jax.commands.hosts``): ``--mesh`` and the
multi-process ``--coordinator``, ``--num-processes``, ``--process-id`` (or ``SANA_JAX_COORDINATOR``,
``SANA_JAX_NUM_PROCESSES``, ``SANA_JAX_PROCESS_ID``). The same command line starts on every host; then

* :func:`joined` joins the processes and the mesh spans all their devices;
* every process runs the same programs; a sharded result is brought to each host with :func:`to_host`
  (``multihost_utils.process_allgather``: the shards travel over the collectives, no shared file system needed);
* only process 0 writes files (:func:`is_writer`); :func:`written` holds the others until it has finished, so no
  process exits while the run's output is still being written;
* an error in any one process ends them all with one line (:func:`report_failure` in the failing one, a watcher
  thread in every other): ``sana-jax generate: error: process 1 failed: …`` and a non-zero status — instead of the
  other processes waiting in a collective for a peer that is gone until JAX's heartbeat timeout.

The key-value store used for the last two is the one ``jax.distributed`` runs on process 0 (no extra service).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time

import jax
import numpy as np

_ABORT_KEY = "sana_jax/abort"
_ACK_KEY = "sana_jax/abort_seen"
_BARRIER_TIMEOUT_MS = 24 * 3600 * 1000  # writing a 2K video can take minutes; a failure ends the wait sooner
_state = {"command": "sana-jax", "failed": False, "barriers": 0, "watcher": None}


def joined(coordinator_address: str | None = None, num_processes: int | None = None,
           process_id: int | None = None, *, command: str = "sana-jax") -> None:
    """Join the run's processes (``initialize_distributed``; once per process, later calls do nothing) and start
    watching for a failure in another process (``command`` names the program in that line)."""
    _state["command"] = command
    if not is_initialized():
        from sana_jax.parallel.mesh import initialize_distributed

        initialize_distributed(coordinator_address, num_processes, process_id)
    _watch_for_failures()


def is_initialized() -> bool:
    from jax._src import distributed

    return distributed.global_state.client is not None


def is_writer() -> bool:
    """True in the process that writes the run's files (process 0; always true in a one-process run)."""
    return jax.process_index() == 0


def to_host(x) -> np.ndarray:
    """The whole value of ``x`` as a NumPy array on this host, whether ``x`` lives on this process's devices or is
    sharded over several hosts (then gathered over the collectives: every process must call this)."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def written() -> None:
    """Process 0 calls this when its files are written, the others to wait for that. A no-op in one process."""
    if jax.process_count() == 1 or not is_initialized():
        return
    _state["barriers"] += 1
    _client().wait_at_barrier(f"sana_jax/written/{_state['barriers']}", _BARRIER_TIMEOUT_MS)


def report_failure(message: str) -> None:
    """Called by the process whose command failed: the others print ``message`` (naming this process) and exit.
    Returns once they have seen it (or after a few seconds), so process 0's coordinator outlives the news."""
    if not is_initialized() or jax.process_count() == 1:
        return
    _state["failed"] = True
    client = _client()
    try:
        client.key_value_set(_ABORT_KEY, f"process {jax.process_index()} failed: {message}")
    except Exception:  # another process failed first: its message stands
        pass
    _wait_for_acks(client, jax.process_count() - 1)


def _wait_for_acks(client, count: int, timeout_s: float = 10) -> None:
    """Until ``count`` processes have acknowledged a failure report (or ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if int(client.key_value_try_get(_ACK_KEY)) >= count:
                return
        except Exception:
            pass
        time.sleep(0.05)


def exit_now(status: int) -> None:
    """End this process at once: after a failure the collectives and ``jax.distributed``'s shutdown barrier would
    wait for peers that are gone."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _client():
    from jax._src import distributed

    return distributed.global_state.client


def _watch_for_failures() -> None:
    """A daemon thread that ends this process when another one reports a failure. It polls (four times a second)
    rather than blocking inside the client, and stops at exit: a thread blocked in C++ when Python finalises
    aborts the process."""
    if _state["watcher"] is not None:
        return
    client, stop = _client(), threading.Event()

    def watch():
        while not stop.wait(0.25):
            try:
                message = client.key_value_try_get(_ABORT_KEY)
            except Exception:  # not set (or the service has gone with process 0, which JAX reports itself)
                continue
            if _state["failed"]:  # this process's own report
                return
            print(f"{_state['command']}: error: {message}", file=sys.stderr)
            try:
                client.key_value_increment(_ACK_KEY, 1)
            except Exception:
                pass
            if jax.process_index() == 0:  # it serves the key-value store: the others leave first
                _wait_for_acks(client, jax.process_count() - 1)
                time.sleep(0.5)
            exit_now(1)

    thread = threading.Thread(target=watch, name="sana-jax-failure-watcher", daemon=True)
    thread.start()
    _state["watcher"] = thread

    def stop_watching():
        stop.set()
        thread.join()

    atexit.register(stop_watching)  # after jax.distributed's own handler, so it runs first


__all__ = ["exit_now", "is_initialized", "is_writer", "joined", "report_failure", "to_host", "written"]
