"""Building blocks of the Wan2.1 video VAE (diffusers ``autoencoder_kl_wan.py``), channels-last (B, T, H, W, C).

Reference: ``huggingface/diffusers:src/diffusers/models/autoencoders/autoencoder_kl_wan.py`` (the modules and their
``feat_cache``). Every block that looks at earlier frames is called as ``y, cache = block(x, cache)``:

* ``cache=None`` means "this is the first chunk of the clip": causal convs see zero history and the temporal
  resamplers apply their first-frame rules (``downsample3d``: frame 0 passes through; ``upsample3d``: frame 0
  bypasses ``time_conv`` and the remaining frames start a causal sequence of their own with zero history).
* otherwise ``cache`` holds what the block kept from the previous chunk, with a shape that does not depend on the
  clip length (the last 2 input frames of a 3-tap causal conv, the last frame before a ``downsample3d`` time conv,
  the last 2 frames before an ``upsample3d`` time conv).

The returned cache always has that fixed shape, so a clip can be run in one call (the exact single-pass form:
``cache=None`` and all frames at once) or as a first chunk followed by a ``lax.scan`` over equal later chunks, with
identical results. Padding with zeros and prepending a zero cache are the same operation, which is what makes the
zero-initialised cache of the first chunk equal to diffusers' "no cache yet" branch.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from sana_jax.nn.conv import conv
from sana_jax.nn.layers import DType, param



def _kernel_init():
    return nnx.initializers.lecun_normal()


def _conv(x: jax.Array, kernel: jax.Array, bias: jax.Array, *, stride, padding, dtype: DType) -> jax.Array:
    return conv(x.astype(dtype), kernel.astype(dtype), stride=stride, padding=padding) + bias.astype(dtype)


def _per_frame(fn, x: jax.Array) -> jax.Array:
    """Apply a 2-D op ``fn`` (N, H, W, C) → (N, H', W', C') to every frame of ``x`` (B, T, H, W, C)."""
    b, t = x.shape[:2]
    y = fn(x.reshape(b * t, *x.shape[2:]))
    return y.reshape(b, t, *y.shape[1:])


class RMSNorm(nnx.Module):
    """``WanRMS_norm``: ``x / max(‖x‖₂, 1e-12) · √C · gamma`` over channels (L2 normalise, not mean square).

    The norm is taken in float32; the result is cast back to the input dtype before the affine scale, as in
    diffusers. ``gamma`` is stored (C,) (torch: (C,1,1,1) in residual blocks, (C,1,1) in attention).
    """

    def __init__(self, dim: int, *, param_dtype: DType, rngs: nnx.Rngs | None):
        self.scale = math.sqrt(dim)
        self.gamma = param(rngs, nnx.initializers.ones, (dim,), ("embed",), param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(jnp.square(x32), axis=-1, keepdims=True))
        y = (x32 / jnp.maximum(norm, 1e-12)).astype(x.dtype)
        return y * self.scale * self.gamma[...].astype(x.dtype)


class Pointwise(nnx.Module):
    """A 1×1×1 (or 1×1) convolution: ``x @ kernel + bias`` with ``kernel`` (in, out). No temporal context."""

    def __init__(self, cin: int, cout: int, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs | None):
        self.dtype = dtype
        self.kernel = param(rngs, _kernel_init(), (cin, cout), (None, "embed"), param_dtype)
        self.bias = param(rngs, nnx.initializers.zeros, (cout,), ("embed",), param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype)) + self.bias[...].astype(self.dtype)


class CausalConv3d(nnx.Module):
    """``WanCausalConv3d`` with kernel (kt, kh, kw), stride 1: time padded causally (kt−1 frames of history),
    H and W padded symmetrically. ``cache`` is the last kt−1 input frames of the previous chunk (zeros if None)."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int] = (3, 3, 3), *, dtype: DType,
                 param_dtype: DType, rngs: nnx.Rngs | None):
        self.dtype = dtype
        self.context = kernel[0] - 1
        self.pad_hw = ((kernel[1] // 2,) * 2, (kernel[2] // 2,) * 2)
        self.kernel = param(rngs, _kernel_init(), (*kernel, cin, cout), (None, None, None, None, "embed"),
                            param_dtype)
        self.bias = param(rngs, nnx.initializers.zeros, (cout,), ("embed",), param_dtype)

    def __call__(self, x: jax.Array, cache: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        x = x.astype(self.dtype)
        if cache is None:
            cache = jnp.zeros((x.shape[0], self.context, *x.shape[2:]), x.dtype)
        full = jnp.concatenate([cache.astype(x.dtype), x], axis=1)
        y = _conv(full, self.kernel[...], self.bias[...], stride=(1, 1, 1), padding=((0, 0), *self.pad_hw),
                  dtype=self.dtype)
        return y, full[:, full.shape[1] - self.context:]


class ResidualBlock(nnx.Module):
    """``WanResidualBlock``: ``shortcut(x) + conv2(SiLU(norm2(conv1(SiLU(norm1(x))))))`` (dropout is inference
    identity); the shortcut is a 1×1×1 conv when the width changes. Cache: the two convs' caches."""

    def __init__(self, cin: int, cout: int, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs | None):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = RMSNorm(cin, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = CausalConv3d(cin, cout, **kw)
        self.norm2 = RMSNorm(cout, param_dtype=param_dtype, rngs=rngs)
        self.conv2 = CausalConv3d(cout, cout, **kw)
        self.conv_shortcut = Pointwise(cin, cout, **kw) if cin != cout else nnx.data(None)

    def __call__(self, x: jax.Array, cache):
        c1, c2 = (None, None) if cache is None else cache
        h = x if self.conv_shortcut is None else self.conv_shortcut(x)
        y, c1 = self.conv1(jax.nn.silu(self.norm1(x)), c1)
        y, c2 = self.conv2(jax.nn.silu(self.norm2(y)), c2)
        return y + h.astype(y.dtype), (c1, c2)


class AttentionBlock(nnx.Module):
    """``WanAttentionBlock``: per frame, RMS norm → 1×1 ``to_qkv`` → single-head softmax attention over the H·W
    positions (scale 1/√C, softmax in float32) → 1×1 ``proj`` → + input. No temporal mixing, so no cache."""

    def __init__(self, dim: int, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs | None):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype
        self.norm = RMSNorm(dim, param_dtype=param_dtype, rngs=rngs)
        self.to_qkv = Pointwise(dim, 3 * dim, **kw)
        self.proj = Pointwise(dim, dim, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(b * t, h * w, 3 * c)
        q, k, v = jnp.split(qkv, 3, axis=-1)
        scores = jnp.einsum("nqc,nkc->nqk", q, k).astype(jnp.float32) / math.sqrt(c)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        out = jnp.einsum("nqk,nkc->nqc", probs, v).reshape(b, t, h, w, c)
        return self.proj(out) + x.astype(self.dtype)


class Resample(nnx.Module):
    """diffusers ``WanResample`` in one of four modes (with the single-pass first-frame rules):

    * ``downsample2d``: per frame, pad right/bottom by 1, 3×3 conv stride 2.
    * ``downsample3d``: the same, then ``time_conv`` (3,1,1) stride 2 without padding over
      [previous chunk's last frame, frames]; in the first chunk frame 0 passes through and the windows are
      (0,1,2), (2,3,4), … Cache: the last (spatially downsampled) frame.
    * ``upsample2d``: per frame, nearest 2× then 3×3 conv C → C/2.
    * ``upsample3d``: first ``time_conv`` (3,1,1) C → 2C, causal, whose two halves become two consecutive frames;
      in the first chunk frame 0 bypasses it (yields one frame) and the other frames start with zero history.
      Cache: the last 2 frames entering ``time_conv``. Then the spatial ``upsample2d`` step.
    """

    def __init__(self, dim: int, mode: str, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs | None):
        if mode not in ("downsample2d", "downsample3d", "upsample2d", "upsample3d"):
            raise ValueError(f"unknown resample mode {mode!r}")
        self.mode, self.dtype = mode, dtype
        up = mode.startswith("up")
        cout = dim // 2 if up else dim
        axes = (None, None, None, "embed")
        self.resample = nnx.Dict(kernel=param(rngs, _kernel_init(), (3, 3, dim, cout), axes, param_dtype),
                                 bias=param(rngs, nnx.initializers.zeros, (cout,), ("embed",), param_dtype))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        elif mode == "downsample3d":
            self.time_conv = nnx.Dict(
                kernel=param(rngs, _kernel_init(), (3, 1, 1, dim, dim), (None,) * 4 + ("embed",), param_dtype),
                bias=param(rngs, nnx.initializers.zeros, (dim,), ("embed",), param_dtype))
        else:
            self.time_conv = nnx.data(None)

    def _spatial(self, x: jax.Array) -> jax.Array:
        k, bias = self.resample["kernel"][...], self.resample["bias"][...]
        if self.mode.startswith("up"):
            x = jnp.repeat(jnp.repeat(x, 2, axis=-3), 2, axis=-2)  # nearest-exact at scale 2 == repeat
            return _conv(x, k, bias, stride=(1, 1), padding=((1, 1), (1, 1)), dtype=self.dtype)
        return _conv(x, k, bias, stride=(2, 2), padding=((0, 1), (0, 1)), dtype=self.dtype)

    def _time_down(self, x: jax.Array) -> jax.Array:
        return _conv(x, self.time_conv["kernel"][...], self.time_conv["bias"][...], stride=(2, 1, 1),
                     padding=((0, 0), (0, 0), (0, 0)), dtype=self.dtype)

    def __call__(self, x: jax.Array, cache):
        x = x.astype(self.dtype)
        if self.mode == "upsample3d":
            first = cache is None
            head, rest = (x[:, :1], x[:, 1:]) if first else (None, x)
            if rest.shape[1]:
                y, cache = self.time_conv(rest, cache)
                b, t, h, w, _ = y.shape
                y = y.reshape(b, t, h, w, 2, -1).transpose(0, 1, 4, 2, 3, 5).reshape(b, 2 * t, h, w, -1)
            else:  # a lone first frame: time_conv has seen nothing yet (diffusers' "Rep" state)
                y, cache = rest, jnp.zeros((x.shape[0], 2, *x.shape[2:]), x.dtype)
            x = y if head is None else jnp.concatenate([head, y], axis=1)
        x = _per_frame(self._spatial, x)
        if self.mode == "downsample3d":
            if cache is None:
                y = jnp.concatenate([x[:, :1], self._time_down(x)], axis=1) if x.shape[1] > 1 else x
            else:
                y = self._time_down(jnp.concatenate([cache.astype(x.dtype), x], axis=1))
            return y, x[:, -1:]
        return x, (cache if self.mode == "upsample3d" else None)


class MidBlock(nnx.Module):
    """``WanMidBlock``: residual → attention → residual."""

    def __init__(self, dim: int, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs | None):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resnets = nnx.List([ResidualBlock(dim, dim, **kw), ResidualBlock(dim, dim, **kw)])
        self.attentions = nnx.List([AttentionBlock(dim, **kw)])

    def __call__(self, x: jax.Array, cache):
        c0, c1 = (None, None) if cache is None else cache
        x, c0 = self.resnets[0](x, c0)
        x = self.attentions[0](x)
        x, c1 = self.resnets[1](x, c1)
        return x, (c0, c1)


class UpBlock(nnx.Module):
    """``WanUpBlock``: ``num_res_blocks + 1`` residual blocks, then an optional upsampler."""

    def __init__(self, cin: int, cout: int, num_res_blocks: int, mode: str | None, *, dtype: DType,
                 param_dtype: DType, rngs: nnx.Rngs | None):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resnets = nnx.List([ResidualBlock(cin if i == 0 else cout, cout, **kw)
                                 for i in range(num_res_blocks + 1)])
        self.upsampler = Resample(cout, mode, **kw) if mode else nnx.data(None)

    def __call__(self, x: jax.Array, cache):
        caches = [None] * (len(self.resnets) + 1) if cache is None else list(cache)
        for i, resnet in enumerate(self.resnets):
            x, caches[i] = resnet(x, caches[i])
        if self.upsampler is not None:
            x, caches[-1] = self.upsampler(x, caches[-1])
        return x, tuple(caches)
