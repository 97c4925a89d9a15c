"""Fused kernels (Pallas). Import-safe without a GPU and without ``jax_triton``.

* :mod:`sana_jax.kernels.dispatch` — ``linear_attention(q, k, v, cos, sin, *, causal_chunk=None, impl="auto")``:
  the entry point (kernel on GPU, XLA reference elsewhere).
* :mod:`sana_jax.kernels.linear_attention` — the Pallas kernels themselves.
* :mod:`sana_jax.kernels.sharded` — the kernels inside ``jax.shard_map`` for programs on a mesh (local state, one
  ``psum`` over ``context``, local read-out); the dispatcher uses it inside ``linear_attention_mesh(mesh)``.

The dispatcher function is deliberately not re-exported here: ``sana_jax.kernels.linear_attention`` names the
kernel module, and a function of the same name on the package would shadow it.
"""
