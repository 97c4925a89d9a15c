"""Timestep and caption embeddings (diffusers ``Timesteps``/``TimestepEmbedding``/``AdaLayerNormSingle``/
``PixArtAlphaTextProjection``, as ``SanaVideoTransformer3DModel`` uses them in
``huggingface/diffusers:src/diffusers/models/transformers/transformer_sana_video.py``)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from sana_jax.nn.layers import DType, Linear


def timestep_sinusoid(t: jax.Array, dim: int = 256, max_period: float = 10000.0) -> jax.Array:
    """``[cos(t·ω_i), sin(t·ω_i)]`` with ω_i = exp(−ln(max_period)·i/(dim/2)), always in float32.

    float32 matters: at t ≈ 1000 a bf16 sinusoid changes the modulation by ~1e-2 relative (diffusers' ``Timesteps``
    computes it in float32 too).
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = t.astype(jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class TimestepEmbedding(nnx.Module):
    """``linear_2(SiLU(linear_1(x)))``."""

    def __init__(self, in_features: int, dim: int, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.linear_1 = Linear(in_features, dim, axes=(None, "embed"), **kw)
        self.linear_2 = Linear(dim, dim, axes=("embed", None), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_2(jax.nn.silu(self.linear_1(x)))


class AdaLayerNormSingle(nnx.Module):
    """PixArt-α adaLN-single: timestep → ``emb`` (D) and the six modulation vectors ``t6`` (6·D).

    Parameter tree mirrors diffusers: ``emb.timestep_embedder.linear_{1,2}`` and ``linear``.
    """

    def __init__(self, dim: int, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        self.timestep_embedder = TimestepEmbedding(256, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.linear = Linear(dim, 6 * dim, axes=("embed", "mlp"), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype

    def __call__(self, timestep: jax.Array) -> tuple[jax.Array, jax.Array]:
        emb = self.timestep_embedder(timestep_sinusoid(timestep).astype(self.dtype))
        return self.linear(jax.nn.silu(emb)), emb


class CaptionProjection(nnx.Module):
    """``linear_2(GELU_tanh(linear_1(caption)))`` (PixArt's ``y_proj``)."""

    def __init__(self, in_features: int, dim: int, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.linear_1 = Linear(in_features, dim, axes=(None, "embed"), **kw)
        self.linear_2 = Linear(dim, dim, axes=("embed", None), **kw)

    def __call__(self, caption: jax.Array) -> jax.Array:
        return self.linear_2(jax.nn.gelu(self.linear_1(caption), approximate=True))
