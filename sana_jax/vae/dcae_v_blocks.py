"""Building blocks of DC-AE-V (DC-Gen ``dc_videogen/dc_ae_v_ops.py``), channels-last (B, T, H, W, C).

Reference: ``dc-ai-projects/DC-Gen:dc_videogen/dc_ae_v_ops.py`` (the modules, and ``ConvLayer3d`` with
``causal_chunk_length`` for the chunk-causal convolution).

Every 3-D convolution of DC-AE-V is *chunk-causal* with chunk length L: time is cut into chunks of L frames; a
chunk sees itself fully (bidirectional, the 3-tap kernel zero-padded on the right of the chunk) and, on its left,
the last input frame of the previous chunk (zeros for the first chunk of a clip). :func:`chunk_causal_conv` runs
this in one shot over the whole clip with the chunks as a reshaped batch axis. Blocks are called as
``y, cache = block(x, cache)``:

* ``cache=None``: the one-shot form. The clip starts here (zero history) and no cache is returned (``None``).
* ``cache`` = the pytree from :meth:`init_cache` (zeros: the clip starts here) or from the previous call: the
  conv's history is the cached frame, and the returned cache holds the last input frame of every conv — the same
  frames the reference keeps in its ``feature_cache``. Calls on consecutive temporal tiles (each a multiple of L
  frames) then give exactly the one-shot result; this is what the ``lax.scan`` of :mod:`sana_jax.vae.dcae_v` does.

When T is not a multiple of L the reference falls back to a plain convolution with symmetric zero padding and no
cache (one chunk of length T without history); :func:`chunk_causal_conv` does the same.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sana_jax.nn.layers import DType, param, stacked

_DN = ("NDHWC", "DHWIO", "NDHWC")


def _kernel_init():
    return nnx.initializers.lecun_normal(in_axis=(0, 1, 2, 3), out_axis=4)


def chunk_causal_conv(x: jax.Array, kernel: jax.Array, chunk: int, history: jax.Array | None = None,
                      *, dtype: DType = jnp.float32) -> jax.Array:
    """3-D convolution (stride 1, "same" spatial zero padding, no bias) that is causal across chunks of ``chunk``
    frames and bidirectional inside them.

    ``x`` (B, T, H, W, C); ``kernel`` (kt, kh, kw, C, C'); ``history`` (B, kt//2, H, W, C): the frames before
    ``x`` (zeros if None). If ``T % chunk`` ≠ 0: the reference's fallback, a plain conv with symmetric zero padding
    over the whole ``x`` (no history allowed).
    """
    kt, kh, kw = kernel.shape[:3]
    p = kt // 2
    b, t, h, w, c = x.shape
    spatial = ((kh // 2, kh // 2), (kw // 2, kw // 2))
    x, kernel = x.astype(dtype), kernel.astype(dtype)

    def conv(v, time_pad):
        return jax.lax.conv_general_dilated(v, kernel, (1, 1, 1), (time_pad, *spatial), dimension_numbers=_DN)

    if t % chunk or p == 0 or (t == chunk and history is None):
        if t % chunk and history is not None:
            raise ValueError(f"a chunk-causal conv with history needs T ({t}) to be a multiple of its chunk {chunk}")
        return conv(x, (p, p))
    if chunk < p:
        raise ValueError(f"chunk {chunk} is shorter than the temporal half-kernel {p}")
    n = t // chunk
    xc = x.reshape(b, n, chunk, h, w, c)
    first = (jnp.zeros((b, 1, p, h, w, c), dtype) if history is None
             else history.astype(dtype).reshape(b, 1, p, h, w, c))
    left = jnp.concatenate([first, xc[:, :-1, chunk - p:]], axis=1)  # previous chunk's last p input frames
    right = jnp.zeros((b, n, p, h, w, c), dtype)  # a chunk never sees its future
    padded = jnp.concatenate([left, xc, right], axis=2).reshape(b * n, chunk + 2 * p, h, w, c)
    return conv(padded, (0, 0)).reshape(b, t, h, w, -1)


def pixel_unshuffle_3d(x: jax.Array, s: int, t: int) -> jax.Array:
    """(B, T, H, W, C) → (B, T/t, H/s, W/s, C·t·s·s), channel ``((c·t + it)·s + ih)·s + iw`` (the reference)."""
    b, f, h, w, c = x.shape
    x = x.reshape(b, f // t, t, h // s, s, w // s, s, c).transpose(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, f // t, h // s, w // s, c * t * s * s)


def pixel_shuffle_3d(x: jax.Array, s: int, t: int) -> jax.Array:
    """Inverse of :func:`pixel_unshuffle_3d`: (B, T, H, W, C·t·s·s) → (B, T·t, H·s, W·s, C)."""
    b, f, h, w, cc = x.shape
    c = cc // (t * s * s)
    x = x.reshape(b, f, h, w, c, t, s, s).transpose(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, f * t, h * s, w * s, c)


class RMSNorm3d(nnx.Module):
    """``rms3d``: ``x / sqrt(mean(x², C) + eps) · weight + bias`` over channels, computed in float32."""

    def __init__(self, dim: int, *, eps: float, param_dtype: DType, rngs: nnx.Rngs):
        self.eps = eps
        self.weight = param(rngs, nnx.initializers.ones, (dim,), ("embed",), param_dtype)
        self.bias = param(rngs, nnx.initializers.zeros, (dim,), ("embed",), param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (y * self.weight[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(x.dtype)


class ChunkConv3d(nnx.Module):
    """A chunk-causal ``ConvLayer3d`` (kernel (kt, kh, kw), stride 1). Cache: the last kt//2 input frames."""

    def __init__(self, cin: int, cout: int, *, chunk: int, kernel: tuple[int, int, int] = (3, 3, 3),
                 use_bias: bool = True, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        self.chunk, self.dtype, self.cin, self.context = chunk, dtype, cin, kernel[0] // 2
        self.kernel = param(rngs, _kernel_init(), (*kernel, cin, cout), (None, None, None, None, "embed"),
                            param_dtype)
        self.bias = (param(rngs, nnx.initializers.zeros, (cout,), ("embed",), param_dtype) if use_bias
                     else nnx.data(None))

    def init_cache(self, b: int, h: int, w: int, dtype: DType) -> jax.Array:
        return jnp.zeros((b, self.context, h, w, self.cin), dtype)

    def __call__(self, x: jax.Array, cache: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
        y = chunk_causal_conv(x, self.kernel[...], self.chunk, cache, dtype=self.dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        new = None if cache is None else x[:, x.shape[1] - self.context:].astype(cache.dtype)
        return y, new


class ResBlock(nnx.Module):
    """``ResidualBlock3d(ResBlock3d, Identity)``: ``x + RMS(conv2(SiLU(conv1(x))))``; conv2 has no bias."""

    def __init__(self, dim: int, *, chunk: int, eps: float, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        kw = dict(chunk=chunk, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = ChunkConv3d(dim, dim, **kw)
        self.conv2 = ChunkConv3d(dim, dim, use_bias=False, **kw)
        self.norm = RMSNorm3d(dim, eps=eps, param_dtype=param_dtype, rngs=rngs)

    def init_cache(self, b: int, h: int, w: int, dtype: DType):
        return self.conv1.init_cache(b, h, w, dtype), self.conv2.init_cache(b, h, w, dtype)

    def __call__(self, x: jax.Array, cache=None):
        c1, c2 = (None, None) if cache is None else cache
        y, c1 = self.conv1(x, c1)
        y, c2 = self.conv2(jax.nn.silu(y), c2)
        out = x.astype(y.dtype) + self.norm(y)
        return out, (None if cache is None else (c1, c2))


class ResStack(nnx.Module):
    """``depth`` identical :class:`ResBlock` s with stacked parameters (leading ``layers`` axis), run by
    ``lax.scan``; the cache is the blocks' caches stacked the same way."""

    def __init__(self, dim: int, depth: int, *, chunk: int, eps: float, dtype: DType, param_dtype: DType,
                 rngs: nnx.Rngs):
        self.depth = depth

        self.layers = stacked(depth, lambda r: ResBlock(dim, chunk=chunk, eps=eps, dtype=dtype,
                                                        param_dtype=param_dtype, rngs=r), rngs)
        self.dim, self.context = dim, 1

    def init_cache(self, b: int, h: int, w: int, dtype: DType):
        one = jnp.zeros((self.depth, b, self.context, h, w, self.dim), dtype)
        return one, one

    def __call__(self, x: jax.Array, cache=None):
        graphdef, state = nnx.split(self.layers)
        if cache is None:
            def body(h, st):
                return nnx.merge(graphdef, st)(h)[0], None

            x, _ = jax.lax.scan(body, x, state)
            return x, None

        def body_cached(h, xs):
            st, c = xs
            return nnx.merge(graphdef, st)(h, c)

        return jax.lax.scan(body_cached, x, (state, cache))


class Downsample(nnx.Module):
    """``ConvPixelUnshuffleDownSampleLayer3d`` (conv cin → cout/(s²t), then 3-D pixel unshuffle), plus with
    ``shortcut`` the ``averaging`` shortcut: unshuffle x and average groups of cin·s²t/cout channels."""

    def __init__(self, cin: int, cout: int, s: int, t: int, *, shortcut: bool, chunk: int, dtype: DType,
                 param_dtype: DType, rngs: nnx.Rngs):
        ratio = s * s * t
        if cout % ratio or (shortcut and (cin * ratio) % cout):
            raise ValueError(f"downsample {cin} → {cout} with factors s={s}, t={t} does not divide")
        self.s, self.t, self.cout, self.shortcut = s, t, cout, shortcut
        self.conv = ChunkConv3d(cin, cout // ratio, chunk=chunk, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def init_cache(self, b: int, h: int, w: int, dtype: DType):
        return self.conv.init_cache(b, h, w, dtype)

    def __call__(self, x: jax.Array, cache=None):
        y, cache = self.conv(x, cache)
        y = pixel_unshuffle_3d(y, self.s, self.t)
        if self.shortcut:
            u = pixel_unshuffle_3d(x.astype(jnp.float32), self.s, self.t)
            u = u.reshape(*u.shape[:4], self.cout, -1).mean(axis=-1)
            y = y + u.astype(y.dtype)
        return y, cache


class Upsample(nnx.Module):
    """``ConvPixelShuffleUpSampleLayer3d`` (conv cin → cout·s²t, then 3-D pixel shuffle), plus with ``shortcut``
    the ``duplicating`` shortcut: repeat every channel cout·s²t/cin times, then pixel shuffle."""

    def __init__(self, cin: int, cout: int, s: int, t: int, *, shortcut: bool, chunk: int, dtype: DType,
                 param_dtype: DType, rngs: nnx.Rngs):
        ratio = s * s * t
        if shortcut and (cout * ratio) % cin:
            raise ValueError(f"upsample {cin} → {cout} with factors s={s}, t={t} does not divide")
        self.s, self.t, self.repeats, self.shortcut = s, t, cout * ratio // cin, shortcut
        self.conv = ChunkConv3d(cin, cout * ratio, chunk=chunk, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def init_cache(self, b: int, h: int, w: int, dtype: DType):
        return self.conv.init_cache(b, h, w, dtype)

    def __call__(self, x: jax.Array, cache=None):
        y, cache = self.conv(x, cache)
        y = pixel_shuffle_3d(y, self.s, self.t)
        if self.shortcut:
            y = y + pixel_shuffle_3d(jnp.repeat(x.astype(y.dtype), self.repeats, axis=-1), self.s, self.t)
        return y, cache
