"""ReLU linear attention with RoPE on the numerator only (Sana ``LiteLAReLURope``,
``NVlabs/Sana:diffusion/model/nets/sana_blocks.py``; diffusers ``SanaLinearAttnProcessor3_0``).

With φ = ReLU and R = the 3-D rotation, per head:

    out_n = (Σ_m v_m R(φ(k_m))ᵀ) R(φ(q_n)) / (φ(q_n) · Σ_m φ(k_m) + eps)

The numerator uses the rotated features, the normaliser the un-rotated ones. All contractions run in float32 whatever
the activation dtype (the state is a sum over up to ~33k tokens). The computation is split into a *state* (the
d×d matrix S = Σ R(φ(k)) vᵀ and the vector z = Σ φ(k)) and a *read-out*, so streaming and context-parallel code
can carry or reduce the state and reuse the read-out unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from sana_jax.nn.rope import apply_rope


class LinearAttentionState(NamedTuple):
    """Per-head running sums: ``kv`` (B, H, d_k, d_v) = Σ R(φ(k)) vᵀ, ``k_sum`` (B, H, d_k) = Σ φ(k)."""

    kv: jax.Array
    k_sum: jax.Array


def feature_map(x: jax.Array, cos: jax.Array, sin: jax.Array) -> tuple[jax.Array, jax.Array]:
    """φ(x) = ReLU(x) in float32, and its rotation R(φ(x)). ``x`` is (B, N, H, d)."""
    phi = jax.nn.relu(x.astype(jnp.float32))
    return phi, apply_rope(phi, cos, sin)


def accumulate_state(k: jax.Array, v: jax.Array, cos: jax.Array, sin: jax.Array) -> LinearAttentionState:
    """The state contributed by keys/values (B, N, H, d) (keys pre-ReLU, after the q/k norm)."""
    phi_k, rot_k = feature_map(k, cos, sin)
    kv = jnp.einsum("bnhd,bnhe->bhde", rot_k, v.astype(jnp.float32))
    return LinearAttentionState(kv=kv, k_sum=jnp.sum(phi_k, axis=1))


def read_state(q: jax.Array, state: LinearAttentionState, cos: jax.Array, sin: jax.Array,
               eps: float = 1e-15) -> jax.Array:
    """The attention output (B, N, H, d_v) in float32 for queries ``q`` (B, N, H, d) against ``state``."""
    phi_q, rot_q = feature_map(q, cos, sin)
    num = jnp.einsum("bnhd,bhde->bnhe", rot_q, state.kv)
    den = jnp.einsum("bnhd,bhd->bnh", phi_q, state.k_sum)
    return num * (1.0 / (den + eps))[..., None]


def relu_linear_attention(q: jax.Array, k: jax.Array, v: jax.Array, cos: jax.Array, sin: jax.Array,
                          eps: float = 1e-15) -> jax.Array:
    """Non-causal ReLU linear attention over all N tokens; returns (B, N, H, d_v) in ``q``'s dtype."""
    return read_state(q, accumulate_state(k, v, cos, sin), cos, sin, eps).astype(q.dtype)
