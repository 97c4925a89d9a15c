"""LTX-2 attention (diffusers ``LTX2Attention`` + ``LTX2AudioVideoAttnProcessor``), shared by the text connectors
and the LTX-2 transformer.

q/k/v projections with bias, RMSNorm across all heads on q and k (learned weight, eps 1e-6), RoPE on q and k
applied to the full (B, N, heads·d) projection — either *interleaved* (pairs (2i, 2i+1) over the whole width) or
*split* (per head, first half rotated against second half) — then softmax attention (float32 logits) and ``to_out``.
Reference: ``huggingface/diffusers:src/diffusers/models/transformers/transformer_ltx2.py``,
``Lightricks/LTX-2:packages/ltx-core/src/ltx_core/model/transformer/attention.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sana_jax.nn.attention import softmax_attention
from sana_jax.nn.layers import DType, Linear, RMSNorm

RopeTables = tuple[jax.Array, jax.Array]


def rope_1d_fractional(length: int, dim: int, *, base_seq_len: int = 4096, theta: float = 10000.0,
                       double_precision: bool = True) -> RopeTables:
    """cos/sin (length, dim // 2) of the connectors' 1-D RoPE: positions ``i / base_seq_len`` mapped to [−1, 1),
    frequencies ``theta^linspace(0, 1, dim/2) · π/2`` (diffusers ``LTX2RotaryPosEmbed1d``; the ladder in float64
    unless ``double_precision`` is off)."""
    ladder = np.float64 if double_precision else np.float32
    freqs = (np.power(ladder(theta), np.linspace(0.0, 1.0, dim // 2, dtype=ladder)) * ladder(np.pi / 2.0))
    freqs = freqs.astype(np.float32)
    grid = np.arange(length, dtype=np.float32) / np.float32(base_seq_len)
    angles = (grid[:, None] * np.float32(2) - np.float32(1)) * freqs[None, :]
    return jnp.asarray(np.cos(angles)), jnp.asarray(np.sin(angles))


def apply_interleaved(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate pairs (2i, 2i+1) of ``x`` (..., N, W) by angle i of (…, N, W/2) tables, in float32."""
    x32 = x.astype(jnp.float32)
    a, b = x32[..., 0::2], x32[..., 1::2]
    return jnp.stack([a * cos - b * sin, b * cos + a * sin], axis=-1).reshape(x.shape).astype(x.dtype)


def apply_split(x: jax.Array, cos: jax.Array, sin: jax.Array, heads: int) -> jax.Array:
    """Per head, rotate the first half of the head dim against the second; tables are (…, N, heads·d/2)."""
    shape = x.shape
    x32 = x.astype(jnp.float32).reshape(*shape[:-1], heads, 2, -1)
    c = cos.reshape(*cos.shape[:-1], heads, 1, -1)
    s = sin.reshape(*sin.shape[:-1], heads, 1, -1)
    first, second = x32[..., :1, :], x32[..., 1:, :]
    out = jnp.concatenate([first * c[..., :1, :] - second * s[..., :1, :],
                           second * c[..., :1, :] + first * s[..., :1, :]], axis=-2)
    return out.reshape(shape).astype(x.dtype)


class LTXAttention(nnx.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, *, kv_dim: int | None = None, rope_type: str,
                 dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        if rope_type not in ("interleaved", "split"):
            raise ValueError(f"rope_type must be 'interleaved' or 'split', got {rope_type!r}")
        inner = heads * head_dim
        kv_dim = kv_dim or dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.heads, self.rope_type = heads, rope_type
        self.to_q = Linear(dim, inner, axes=("embed", "heads"), **kw)
        self.to_k = Linear(kv_dim, inner, axes=("embed", "heads"), **kw)
        self.to_v = Linear(kv_dim, inner, axes=("embed", "heads"), **kw)
        self.to_out = Linear(inner, dim, axes=("heads", "embed"), **kw)
        self.norm_q = RMSNorm(inner, eps=1e-6, axis_name="heads", param_dtype=param_dtype, rngs=rngs)
        self.norm_k = RMSNorm(inner, eps=1e-6, axis_name="heads", param_dtype=param_dtype, rngs=rngs)

    def rotate(self, x: jax.Array, rope: RopeTables) -> jax.Array:
        if self.rope_type == "interleaved":
            return apply_interleaved(x, *rope)
        cos, sin = rope
        if cos.ndim == x.ndim + 1:  # (…, N, rope_heads, r): a table with its own head split (LTX-2 a↔v RoPE)
            heads = cos.shape[-2]
            return apply_split(x, cos.reshape(*cos.shape[:-2], -1), sin.reshape(*sin.shape[:-2], -1), heads)
        return apply_split(x, cos, sin, self.heads)

    def __call__(self, x: jax.Array, context: jax.Array | None = None, *, q_rope: RopeTables | None = None,
                 k_rope: RopeTables | None = None, bias: jax.Array | None = None,
                 attention=None) -> jax.Array:
        """``attention(q, k, v, bias)`` on (B, N, heads, d) replaces the local softmax attention (the refiner's
        video self-attention passes ``sana_jax.parallel.ulysses`` on a mesh with a ``context`` axis)."""
        context = x if context is None else context
        q, k, v = self.norm_q(self.to_q(x)), self.norm_k(self.to_k(context)), self.to_v(context)
        if q_rope is not None:
            q = self.rotate(q, q_rope)
            k = self.rotate(k, k_rope if k_rope is not None else q_rope)
        split = lambda a: a.reshape(*a.shape[:-1], self.heads, -1)  # noqa: E731
        out = (attention or softmax_attention)(split(q), split(k), split(v), bias)
        return self.to_out(out.reshape(*out.shape[:-2], -1))


class GeluFeedForward(nnx.Module):
    """diffusers ``FeedForward(dim, activation_fn="gelu-approximate")``: ``net.2(GELU_tanh(net.0.proj(x)))``."""

    def __init__(self, dim: int, hidden: int, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.proj_in = Linear(dim, hidden, axes=("embed", "mlp"), **kw)
        self.proj_out = Linear(hidden, dim, axes=("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.proj_out(jax.nn.gelu(self.proj_in(x), approximate=True))
