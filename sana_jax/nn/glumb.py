"""Mix-FFN with a temporal convolution: diffusers ``GLUMBTempConv``
(``huggingface/diffusers:src/diffusers/models/transformers/transformer_sana_video.py``), Sana ``GLUMBConvTemp``
(``NVlabs/Sana:diffusion/model/nets/basic_modules.py``).

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

from sana_jax.nn.layers import DType, Linear, dequantize, param, scale_of


def temporal_conv(x: jax.Array, kernel: jax.Array, prev: jax.Array | None = None,
                  nxt: jax.Array | None = None) -> jax.Array:
    """``out[t] = Σ_k x[t+k−1] @ kernel[k]`` over axis 1 of ``x`` (B, T, ..., C); ``kernel`` is (3, C, C).

    Frames outside the clip are zeros unless ``prev``/``nxt`` (B, 1, ..., C) supply them (streaming / halos).
    """
    # One GEMM against all three taps at once, then the taps are shifted in time and summed.
    taps = jnp.einsum("bt...c,kcd->kbt...d", x, kernel.astype(x.dtype))
    zero = jnp.zeros_like(taps[0, :, :1])
    from_prev = zero if prev is None else jnp.dot(prev.astype(x.dtype), kernel[0].astype(x.dtype))
    from_next = zero if nxt is None else jnp.dot(nxt.astype(x.dtype), kernel[2].astype(x.dtype))
    return (jnp.concatenate([from_prev, taps[0, :, :-1]], axis=1) + taps[1]
            + jnp.concatenate([taps[2, :, 1:], from_next], axis=1))


def depthwise_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Per-channel 3×3 spatial conv with zero padding on (..., H, W, C); ``kernel`` is (3, 3, 1, C) (HWIO).

    Written as nine shifted multiply-adds, which XLA fuses into one pass: 25× faster than
    ``lax.conv_general_dilated(feature_group_count=C)`` on CPU (bench note in bench/README.md) and memory-bound
    either way on GPU.
    """
    h, w = x.shape[-3], x.shape[-2]
    pad = [(0, 0)] * (x.ndim - 3) + [(1, 1), (1, 1), (0, 0)]
    xp = jnp.pad(x, pad)
    k = kernel[:, :, 0, :]
    return sum(xp[..., i:i + h, j:j + w, :] * k[i, j] for i in range(3) for j in range(3))


class GLUMBTempConv(nnx.Module):
    EIGHT_BIT = {"conv_temp": 3}  # 8-bit storage (sana_jax.nn.layers.quantize_weights): (…, k, in, out)

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
        self.conv_temp_scale = nnx.data(None)

    def temporal_kernel(self) -> jax.Array:
        """The temporal conv's (3, C, C) kernel (dequantised from 8-bit storage)."""
        return dequantize(self.conv_temp[...], scale_of(self, "conv_temp"))

    def spatial(self, x: jax.Array) -> jax.Array:
        """Steps 1–4, per frame: (B, T, H, W, C) → (B, T, H, W, C)."""
        y = jax.nn.silu(self.conv_inverted(x))
        y = depthwise_conv3x3(y, self.conv_depth_kernel[...].astype(self.dtype)) + \
            self.conv_depth_bias[...].astype(self.dtype)
        value, gate = jnp.split(y, 2, axis=-1)
        return self.conv_point(value * jax.nn.silu(gate))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.spatial(x)
        return y + temporal_conv(y, self.temporal_kernel())
