"""Mix-FFN with a temporal convolution (diffusers ``GLUMBTempConv``, Sana ``GLUMBConvTemp``; spec §2.4).

Channels-last on a (B, T, H, W, C) token grid:

1. ``conv_inverted``: 1×1 conv C → 2·hidden with bias, then SiLU;
2. ``conv_depth``: depthwise 3×3 spatial conv (per frame) with bias;
3. GLU: value = first half, gate = second half: ``value · SiLU(gate)``;
4. ``conv_point``: 1×1 conv hidden → C, no bias;
5. ``x + conv_temp(x)``: a dense C → C conv over time, kernel 3, zero padding, no bias.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sana_jax.nn.layers import DType, Linear, param


def temporal_conv(x: jax.Array, kernel: jax.Array, prev: jax.Array | None = None,
                  nxt: jax.Array | None = None) -> jax.Array:
    """``out[t] = Σ_k x[t+k−1] @ kernel[k]`` over axis 1 of ``x`` (B, T, ..., C); ``kernel`` is (3, C, C).

    Frames outside the clip are zeros unless ``prev``/``nxt`` (B, 1, ..., C) supply them (streaming / halos).
    """
    zero = jnp.zeros_like(x[:, :1])
    before = zero if prev is None else prev.astype(x.dtype)
    after = zero if nxt is None else nxt.astype(x.dtype)
    padded = jnp.concatenate([before, x, after], axis=1)
    t = x.shape[1]
    k = kernel.astype(x.dtype)
    return sum(jnp.dot(padded[:, i:i + t], k[i]) for i in range(3))


class GLUMBTempConv(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.hidden = hidden
        self.dtype = dtype
        self.conv_inverted = Linear(dim, 2 * hidden, axes=("embed", "mlp"), **kw)
        self.conv_depth_kernel = param(rngs, nnx.initializers.lecun_normal(), (3, 3, 1, 2 * hidden),
                                       (None, None, None, "mlp"), param_dtype)
        self.conv_depth_bias = param(rngs, nnx.initializers.zeros, (2 * hidden,), ("mlp",), param_dtype)
        self.conv_point = Linear(hidden, dim, axes=("mlp", "embed"), use_bias=False, **kw)
        self.conv_temp = param(rngs, nnx.initializers.zeros, (3, dim, dim), (None, "embed", None), param_dtype)

    def spatial(self, x: jax.Array) -> jax.Array:
        """Steps 1–4, per frame: (B, T, H, W, C) → (B, T, H, W, C)."""
        b, t, h, w, _ = x.shape
        y = jax.nn.silu(self.conv_inverted(x)).reshape(b * t, h, w, 2 * self.hidden)
        y = jax.lax.conv_general_dilated(
            y, self.conv_depth_kernel[...].astype(self.dtype), window_strides=(1, 1), padding=((1, 1), (1, 1)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=2 * self.hidden,
        ) + self.conv_depth_bias[...].astype(self.dtype)
        value, gate = jnp.split(y, 2, axis=-1)
        y = self.conv_point(value * jax.nn.silu(gate))
        return y.reshape(b, t, h, w, -1)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.spatial(x)
        return y + temporal_conv(y, self.conv_temp[...])
