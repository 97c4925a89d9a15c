"""Device meshes from a spec string, and multi-host initialisation.

``make_mesh("data=2,context=4")`` builds a mesh with the named axes (any of ``data``, ``fsdp``, ``context``,
``tensor``; missing ones have size 1, so every rule table can name all four). The product must equal the number
of devices used (all of them by default). ``initialize_distributed`` wraps ``jax.distributed.initialize`` with
flags or the usual environment variables, for multi-host runs.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np
from jax.sharding import Mesh

from sana_jax.errors import InputError

AXES = ("data", "fsdp", "context", "tensor")


def parse_mesh_spec(spec: str) -> dict[str, int]:
    """``"data=2,context=4"`` → ``{"data": 2, "fsdp": 1, "context": 4, "tensor": 1}``."""
    sizes = dict.fromkeys(AXES, 1)
    seen = set()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in AXES:
            raise InputError(f"--mesh {spec!r}: unknown axis {name!r}; axes are {', '.join(AXES)}")
        if name in seen:
            raise InputError(f"--mesh {spec!r}: axis {name!r} given twice")
        try:
            size = int(value)
        except ValueError as e:
            raise InputError(f"--mesh {spec!r}: {part!r} is not name=integer") from e
        if size < 1:
            raise InputError(f"--mesh {spec!r}: axis {name!r} must have size ≥ 1")
        sizes[name] = size
        seen.add(name)
    return sizes


def make_mesh(spec: str | dict[str, int], devices=None) -> Mesh:
    """A mesh with axes ``AXES`` (sizes from ``spec``) over ``devices`` (default: all)."""
    sizes = parse_mesh_spec(spec) if isinstance(spec, str) else {**dict.fromkeys(AXES, 1), **spec}
    devices = list(jax.devices() if devices is None else devices)
    total = math.prod(sizes.values())
    if total != len(devices):
        raise InputError(f"mesh {sizes} needs {total} devices, {len(devices)} are available "
                         f"({jax.default_backend()}); the axis sizes must multiply to the device count")
    return Mesh(np.array(devices).reshape([sizes[a] for a in AXES]), AXES)


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Start ``jax.distributed`` for a multi-host run. Arguments default to ``SANA_JAX_COORDINATOR``,
    ``SANA_JAX_NUM_PROCESSES`` and ``SANA_JAX_PROCESS_ID`` (else JAX's own cluster auto-detection: SLURM,
    Open MPI, Kubernetes …). On CPU the gloo collectives are selected."""
    coordinator_address = coordinator_address or os.environ.get("SANA_JAX_COORDINATOR")
    if num_processes is None and "SANA_JAX_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["SANA_JAX_NUM_PROCESSES"])
    if process_id is None and "SANA_JAX_PROCESS_ID" in os.environ:
        process_id = int(os.environ["SANA_JAX_PROCESS_ID"])
    if jax.config.jax_platforms in (None, "", "cpu") and os.environ.get("JAX_PLATFORMS", "cpu") == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
