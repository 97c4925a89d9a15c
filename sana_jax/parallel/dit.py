"""The SANA-Video DiT on a mesh: batch (and CFG halves) over ``data``, tokens over ``context`` by whole latent
frames, heads / MLP over ``tensor``.

Context parallelism needs no model change: the latents enter sharded along time; each linear attention is a
partial state per device plus one all-reduce of the (d+1)×d per-head state — the Pallas kernel inside
``shard_map`` where the dispatcher picks the kernel (GPU; :mod:`sana_jax.kernels.sharded`, the forward traces
under ``linear_attention_mesh(mesh)``), else the XLA reference, which XLA's SPMD partitioner splits the same way —
and XLA turns the temporal conv's ±1-frame shifts into a one-frame halo exchange with the neighbouring shard;
cross-attention and the per-frame FFN stay local. ``tests/test_parallel.py`` checks the results against one device
and that the compiled HLO holds no all-gather of the token sequence (``tests/test_kernels_sharded.py``: with the
kernel).
"""

from __future__ import annotations

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sana_jax.errors import InputError
from sana_jax.kernels.dispatch import linear_attention_mesh
from sana_jax.parallel.rules import INFERENCE_RULES, param_shardings, shard_state


def activation_shardings(mesh: Mesh) -> dict[str, NamedSharding]:
    """Latents (B, T, H, W, C): batch over data, frames over context; text (B, L, C) and timesteps: batch."""
    return {"latents": NamedSharding(mesh, P("data", "context")), "batch": NamedSharding(mesh, P("data"))}


def check_divisible(batch: int, frames: int, mesh: Mesh) -> None:
    if batch % mesh.shape["data"]:
        raise InputError(f"batch {batch} is not divisible by the mesh's data axis ({mesh.shape['data']})")
    if frames % mesh.shape["context"]:
        raise InputError(f"{frames} latent frames do not split over the context axis ({mesh.shape['context']}): "
                         "tokens are split by whole frames")


def sharded_forward(model, mesh: Mesh, rules=INFERENCE_RULES):
    """``(forward, params)``: ``forward(params, latents, text, timestep, mask)`` jitted on ``mesh``, and the
    model's parameters placed per ``rules``."""
    graphdef, state = nnx.split(model)
    shardings = param_shardings(state, mesh, rules)
    params = shard_state(state, mesh, rules)
    act = activation_shardings(mesh)

    def forward(params, latents, text, timestep, mask):
        with linear_attention_mesh(mesh):  # the linear-attention kernel (when chosen) runs sharded on the mesh
            return nnx.merge(graphdef, params)(latents, text, timestep, mask)

    jitted = jax.jit(forward, in_shardings=(shardings, act["latents"], act["batch"], act["batch"], act["batch"]),
                     out_shardings=act["latents"])
    return jitted, params


def place_inputs(mesh: Mesh, latents, text, timestep, mask):
    """Host arrays (the same on every process) → global ``jax.Array`` s with the forward's input shardings;
    required on multi-host meshes, harmless on one host."""
    import numpy as np

    act = activation_shardings(mesh)

    def place(x, sharding):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return (place(latents, act["latents"]), place(text, act["batch"]), place(timestep, act["batch"]),
            place(mask, act["batch"]))
