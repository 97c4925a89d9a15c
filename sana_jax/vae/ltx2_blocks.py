"""Building blocks of the LTX-2 video VAE, channels-last (diffusers
``huggingface/diffusers:src/diffusers/models/autoencoders/autoencoder_kl_ltx2.py``).

Tensor layout everywhere: (B, T, H, W, C). Space-to-depth / depth-to-space keep the channel order of the PyTorch
code (channel-major, then the (t, h, w) offsets), so converted kernels line up without any permutation.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from sana_jax.nn.conv import conv
from sana_jax.nn.embeddings import TimestepEmbedding, timestep_sinusoid
from sana_jax.nn.layers import DType, param


def pixel_norm(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    """``x / sqrt(mean_c(x²) + eps)`` per position (LTX ``PixelNorm`` / diffusers ``PerChannelRMSNorm``)."""
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)).astype(x.dtype)


class CausalConv3d(nnx.Module):
    """3×3×3 conv, stride 1. Time is padded by repeating edge frames — 2 copies of frame 0 when causal, one of
    each end frame otherwise — and space by ``padding_mode`` ("zeros" or "reflect"), as ``LTX2VideoCausalConv3d``."""

    def __init__(self, in_ch: int, out_ch: int, *, padding_mode: str, dtype: DType, param_dtype: DType,
                 rngs: nnx.Rngs):
        fan_in = 27 * in_ch
        self.kernel = param(rngs, nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
                            (3, 3, 3, in_ch, out_ch), (None, None, None, None, "conv_out"), param_dtype)
        bound = 1 / math.sqrt(fan_in)
        self.bias = param(rngs, lambda k, s, t: jax.random.uniform(k, s, t, -bound, bound), (out_ch,),
                          ("conv_out",), param_dtype)
        self.padding_mode = padding_mode
        self.dtype = dtype

    def __call__(self, x: jax.Array, causal: bool) -> jax.Array:
        x = x.astype(self.dtype)
        first, last = x[:, :1], x[:, -1:]
        x = jnp.concatenate([first, first, x] if causal else [first, x, last], axis=1)
        mode = "reflect" if self.padding_mode == "reflect" else "constant"
        x = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)), mode=mode)
        return conv(x, self.kernel[...].astype(self.dtype)) + self.bias[...].astype(self.dtype)


class ResnetBlock(nnx.Module):
    """``x + conv2(SiLU(mod2(norm(conv1(SiLU(mod1(norm(x))))))))``; ``mod`` is the optional timestep modulation
    with the (4, C) table ``shift1, scale1, shift2, scale2``."""

    def __init__(self, ch: int, *, padding_mode: str, timestep_conditioning: bool, dtype: DType,
                 param_dtype: DType, rngs: nnx.Rngs):
        kw = dict(padding_mode=padding_mode, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = CausalConv3d(ch, ch, **kw)
        self.conv2 = CausalConv3d(ch, ch, **kw)
        self.scale_shift_table = (
            param(rngs, lambda k, s, t: jax.random.normal(k, s, t) / math.sqrt(ch), (4, ch), (None, "conv_out"),
                  param_dtype) if timestep_conditioning else nnx.data(None))

    def __call__(self, x: jax.Array, causal: bool, temb: jax.Array | None = None) -> jax.Array:
        h = pixel_norm(x)
        if self.scale_shift_table is not None:
            mods = temb.reshape(temb.shape[0], 1, 1, 1, 4, -1) + self.scale_shift_table[...].astype(temb.dtype)
            shift1, scale1, shift2, scale2 = (mods[..., i, :] for i in range(4))
            h = h * (1 + scale1) + shift1
        h = self.conv1(jax.nn.silu(h), causal)
        h = pixel_norm(h)
        if self.scale_shift_table is not None:
            h = h * (1 + scale2) + shift2
        return x + self.conv2(jax.nn.silu(h), causal)


class ResGroup(nnx.Module):
    """A run of resnets sharing one optional timestep embedder (diffusers mid block / up block resnets)."""

    def __init__(self, ch: int, layers: int, *, padding_mode: str, timestep_conditioning: bool, dtype: DType,
                 param_dtype: DType, rngs: nnx.Rngs):
        self.resnets = nnx.List([ResnetBlock(ch, padding_mode=padding_mode, timestep_conditioning=timestep_conditioning,
                                             dtype=dtype, param_dtype=param_dtype, rngs=rngs) for _ in range(layers)])
        self.time_embedder = (TimestepEmbedding(256, 4 * ch, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                              if timestep_conditioning else nnx.data(None))

    def __call__(self, x: jax.Array, causal: bool, scaled_t: jax.Array | None = None) -> jax.Array:
        temb = None
        if self.time_embedder is not None:
            temb = self.time_embedder(timestep_sinusoid(scaled_t).astype(x.dtype))
        for resnet in self.resnets:
            x = resnet(x, causal, temb)
        return x


def space_to_depth(x: jax.Array, stride: tuple[int, int, int]) -> jax.Array:
    """(B, T, H, W, C) → (B, T/st, H/sh, W/sw, C·st·sh·sw), channel order (c, st, sh, sw) as in PyTorch."""
    b, t, h, w, c = x.shape
    st, sh, sw = stride
    x = x.reshape(b, t // st, st, h // sh, sh, w // sw, sw, c)
    return x.transpose(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, t // st, h // sh, w // sw, c * st * sh * sw)


def depth_to_space(x: jax.Array, stride: tuple[int, int, int]) -> jax.Array:
    """Inverse of :func:`space_to_depth`."""
    b, t, h, w, cc = x.shape
    st, sh, sw = stride
    x = x.reshape(b, t, h, w, cc // (st * sh * sw), st, sh, sw)
    return x.transpose(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, t * st, h * sh, w * sw, -1)


class Downsampler(nnx.Module):
    """Space-to-depth downsampling with an averaged space-to-depth shortcut (``LTX2VideoDownsampler3d``)."""

    def __init__(self, in_ch: int, out_ch: int, stride: tuple[int, int, int], *, padding_mode: str, dtype: DType,
                 param_dtype: DType, rngs: nnx.Rngs):
        self.stride = stride
        self.group = in_ch * math.prod(stride) // out_ch
        self.conv = CausalConv3d(in_ch, out_ch // math.prod(stride), padding_mode=padding_mode, dtype=dtype,
                                 param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, causal: bool) -> jax.Array:
        st = self.stride[0]
        x = jnp.concatenate([x[:, :st - 1], x], axis=1)  # stride 2 in time: frame 0 is duplicated first
        res = space_to_depth(x, self.stride)
        res = res.reshape(*res.shape[:-1], -1, self.group).mean(-1)
        return space_to_depth(self.conv(x, causal), self.stride) + res


class Upsampler(nnx.Module):
    """Conv then depth-to-space, the first ``st − 1`` frames dropped; optional tiled depth-to-space shortcut
    (``LTX2VideoUpsampler3d``)."""

    def __init__(self, in_ch: int, stride: tuple[int, int, int], residual: bool, factor: int, *, padding_mode: str,
                 dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        self.stride, self.residual, self.factor = stride, residual, factor
        self.conv = CausalConv3d(in_ch, in_ch * math.prod(stride) // factor, padding_mode=padding_mode, dtype=dtype,
                                 param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, causal: bool) -> jax.Array:
        drop = self.stride[0] - 1
        y = depth_to_space(self.conv(x, causal), self.stride)[:, drop:]
        if self.residual:
            res = depth_to_space(x, self.stride)
            res = jnp.tile(res, (1, 1, 1, 1, math.prod(self.stride) // self.factor))[:, drop:]
            y = y + res
        return y
