"""One process of the two-process ``jax.distributed`` test (tests/test_parallel.py starts two of these).

Each process owns one CPU device; the mesh ``context=2`` spans both processes (gloo collectives). Each process
checks the shard of the sharded DiT forward it holds against a single-device forward of the same model.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from sana_jax.parallel import initialize_distributed, make_mesh  # noqa: E402
from sana_jax.parallel.dit import place_inputs, sharded_forward  # noqa: E402
from tests.parallel_cases import inputs, rel, tiny_dit  # noqa: E402

if __name__ == "__main__":
    port, pid = sys.argv[1], int(sys.argv[2])
    initialize_distributed(f"localhost:{port}", num_processes=2, process_id=pid)
    jax.config.update("jax_default_matmul_precision", "highest")
    assert jax.process_count() == 2, (jax.process_count(), jax.device_count(), jax.local_device_count())
    model = tiny_dit()
    x, text, t, mask = inputs(batch=2, frames=8)
    local = make_mesh("context=1", devices=jax.local_devices()[:1])
    fwd1, p1 = sharded_forward(model, local)
    want = np.asarray(fwd1(p1, x, text, t, mask))
    # one device of each process (the CPU client may expose several per process)
    devices = [min((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id) for p in range(2)]
    mesh = make_mesh("context=2", devices=devices)
    fwd, params = sharded_forward(model, mesh)
    got = fwd(params, *place_inputs(mesh, x, text, t, mask))
    shard = got.addressable_shards[0]
    print(json.dumps({"pid": pid, "rel": rel(np.asarray(shard.data), want[shard.index]),
                      "index": str(shard.index)}))
