"""Fused kernels (Pallas). Import-safe without a GPU and without ``jax_triton``.

* :mod:`sana_jax.kernels.dispatch` — ``linear_attention(q, k, v, cos, sin, *, causal_chunk=None, impl="auto")``:
  the entry point (kernel on GPU, XLA reference elsewhere).
* :mod:`sana_jax.kernels.linear_attention` — the Pallas kernels themselves.

The dispatcher function is deliberately not re-exported here: ``sana_jax.kernels.linear_attention`` names the
kernel module, and a function of the same name on the package would shadow it.
"""
