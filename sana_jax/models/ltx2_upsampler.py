"""The LTX-2 latent upsampler (diffusers ``LTX2LatentUpsamplerModel``; ltx-core ``LatentUpsampler``), channels-last.
Reference: ``Lightricks/LTX-2:packages/ltx-core/src/ltx_core/model/upsampler/model.py``.

``initial_conv`` (k3, zero padding) → GroupNorm(32) → SiLU → ``num_blocks_per_stage`` ResBlocks
[conv → GN → SiLU → conv → GN → SiLU(x + residual)] → upsampler → as many ResBlocks → ``final_conv``.
Upsamplers: spatial *rational* (``ltx-2-spatial-upscaler-x2-1.0``: per-frame Conv2d to num²·C, PixelShuffle(num),
binomial 5×5 blur-and-stride by den — stride 1, i.e. nothing, for ×2), spatial plain (Conv2d + PixelShuffle 2,
key ``upsampler.0``), temporal (Conv3d + shuffle in time, first frame dropped) or both (Conv3d, 2×2×2).
``dims=2`` runs every convolution per frame.

The network works on **raw** (un-normalised) latents; :meth:`LTX2LatentUpsampler.upsample_normalized` wraps it for
the normalised space the DiTs use: ``normalize(up(un_normalize(z)))`` (ltx-core ``upsample_video``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sana_jax.config import ModelConfig
from sana_jax.errors import ConfigError, InputError
from sana_jax.nn.layers import DType, param

DIFFUSERS_CLASS = "LTX2LatentUpsamplerModel"
RATIONAL_SCALES = {0.75: (3, 4), 1.5: (3, 2), 2.0: (2, 1), 4.0: (4, 1)}


class Buffer(nnx.Variable):
    """A fixed checkpoint tensor (the blur kernel)."""


@dataclasses.dataclass(frozen=True)
class LTX2UpsamplerConfig(ModelConfig):
    """Named as diffusers' ``latent_upsampler/config.json`` (defaults = diffusers' defaults = the released ×2)."""

    CLASS_NAME = DIFFUSERS_CLASS

    in_channels: int = 128
    mid_channels: int = 1024
    num_blocks_per_stage: int = 4
    dims: int = 3
    spatial_upsample: bool = True
    temporal_upsample: bool = False
    rational_spatial_scale: float = 2.0
    use_rational_resampler: bool = True

    def __post_init__(self):
        if self.dims not in (2, 3):
            raise ConfigError(f"dims must be 2 or 3, got {self.dims}")
        if not (self.spatial_upsample or self.temporal_upsample):
            raise ConfigError("spatial_upsample or temporal_upsample must be true")
        if self.temporal_upsample and self.dims != 3:
            raise ConfigError("temporal upsampling needs dims=3")
        if self.mid_channels % 32:
            raise ConfigError(f"mid_channels {self.mid_channels} must be a multiple of the 32 GroupNorm groups")
        if self.rational and float(self.rational_spatial_scale) not in RATIONAL_SCALES:
            raise ConfigError(f"rational_spatial_scale {self.rational_spatial_scale} is not one of "
                              f"{sorted(RATIONAL_SCALES)}")

    @property
    def rational(self) -> bool:
        """The rational spatial resampler is used (only for spatial-only upsampling)."""
        return self.spatial_upsample and not self.temporal_upsample and self.use_rational_resampler

    @property
    def factors(self) -> tuple[float, float, float]:
        """Output size / input size along (frames, height, width) (frames: ``2T − 1`` when temporal)."""
        s = float(self.rational_spatial_scale) if self.rational else (2.0 if self.spatial_upsample else 1.0)
        return (2.0 if self.temporal_upsample else 1.0, s, s)

    @classmethod
    def preset(cls, name: str = "ltx-2-spatial-x2-1.0") -> "LTX2UpsamplerConfig":
        if name == "ltx-2-spatial-x2-1.0":
            return cls()
        if name == "ltx-2.3-spatial-x2-1.1":
            return cls(use_rational_resampler=False)
        raise ConfigError(f"unknown upsampler preset {name!r}; expected 'ltx-2-spatial-x2-1.0' or "
                          "'ltx-2.3-spatial-x2-1.1'")

    @classmethod
    def from_native(cls, config: Mapping[str, Any], source: str = "metadata") -> "LTX2UpsamplerConfig":
        """ltx-core ``LatentUpsamplerConfigurator`` names and defaults (mid 512, rational off)."""
        g = config.get
        return cls.build(dict(in_channels=g("in_channels", 128), mid_channels=g("mid_channels", 512),
                              num_blocks_per_stage=g("num_blocks_per_stage", 4), dims=g("dims", 3),
                              spatial_upsample=g("spatial_upsample", True),
                              temporal_upsample=g("temporal_upsample", False),
                              rational_spatial_scale=g("spatial_scale", 2.0),
                              use_rational_resampler=g("rational_resampler", False)), source)


def _conv_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)
    return lambda k, s, t: jax.random.uniform(k, s, t, -bound, bound)


class Conv(nnx.Module):
    """Conv2d/Conv3d, kernel 3, stride 1, zero padding 1; kernel (k…, in, out), input (N, …, C)."""

    def __init__(self, in_ch: int, out_ch: int, ndim: int, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        self.dtype, self.ndim = dtype, ndim
        fan_in = in_ch * 3 ** ndim
        self.kernel = param(rngs, _conv_init(fan_in), (3,) * ndim + (in_ch, out_ch), (None,) * ndim + (None, "mlp"),
                            param_dtype)
        self.bias = param(rngs, _conv_init(fan_in), (out_ch,), ("mlp",), param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        spatial = "DHW"[3 - self.ndim:]
        dn = (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")
        y = jax.lax.conv_general_dilated(x.astype(self.dtype), self.kernel[...].astype(self.dtype),
                                         (1,) * self.ndim, [(1, 1)] * self.ndim, dimension_numbers=dn)
        return y + self.bias[...].astype(self.dtype)


class GroupNorm(nnx.Module):
    """``torch.nn.GroupNorm(32, C)`` (eps 1e-5, affine) over (spatial…, C/32) per group, statistics in float32."""

    def __init__(self, channels: int, *, param_dtype: DType, rngs: nnx.Rngs, groups: int = 32):
        self.groups = groups
        self.weight = param(rngs, nnx.initializers.ones, (channels,), ("mlp",), param_dtype)
        self.bias = param(rngs, nnx.initializers.zeros, (channels,), ("mlp",), param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        shape = x.shape
        g = x.astype(jnp.float32).reshape(shape[0], -1, self.groups, shape[-1] // self.groups)
        mean = jnp.mean(g, axis=(1, 3), keepdims=True)
        var = jnp.mean(jnp.square(g - mean), axis=(1, 3), keepdims=True)
        y = ((g - mean) * jax.lax.rsqrt(var + 1e-5)).reshape(shape)
        return (y * self.weight[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(x.dtype)


class ResBlock(nnx.Module):
    def __init__(self, channels: int, ndim: int, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = Conv(channels, channels, ndim, **kw)
        self.norm1 = GroupNorm(channels, param_dtype=param_dtype, rngs=rngs)
        self.conv2 = Conv(channels, channels, ndim, **kw)
        self.norm2 = GroupNorm(channels, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.silu(self.norm1(self.conv1(x)))
        return jax.nn.silu(self.norm2(self.conv2(h)) + x)


def pixel_shuffle(x: jax.Array, factors: tuple[int, ...]) -> jax.Array:
    """Channels-last PixelShuffleND over the last ``len(factors)`` spatial axes: channel ``(c, p1, p2, …)``
    (c slowest, as torch's ``b (c p1 p2) …``) moves to offset ``p_k`` of spatial axis k."""
    n = len(factors)
    lead, spatial, ch = x.shape[:-1 - n], x.shape[-1 - n:-1], x.shape[-1]
    c = ch // math.prod(factors)
    x = x.reshape(*lead, *spatial, c, *factors)
    k = len(lead)
    order = list(range(k))
    for i in range(n):
        order += [k + i, k + n + 1 + i]
    x = x.transpose(*order, k + n)
    return x.reshape(*lead, *(s * f for s, f in zip(spatial, factors)), c)


class LTX2LatentUpsampler(nnx.Module):
    """``model(latents)``: raw latents (B, T, H, W, C) → (B, T', H', W', C) (×2 spatially for the released model)."""

    def __init__(self, config: LTX2UpsamplerConfig, *, dtype: DType = jnp.float32, param_dtype: DType = jnp.float32,
                 rngs: nnx.Rngs):
        cfg = self.config = config
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype
        mid, nd = cfg.mid_channels, cfg.dims
        self.initial_conv = Conv(cfg.in_channels, mid, nd, **kw)
        self.initial_norm = GroupNorm(mid, param_dtype=param_dtype, rngs=rngs)
        self.res_blocks = nnx.List([ResBlock(mid, nd, **kw) for _ in range(cfg.num_blocks_per_stage)])
        if cfg.temporal_upsample:
            factors = (2, 2, 2) if cfg.spatial_upsample else (2,)
            self.upsampler = Conv(mid, math.prod(factors) * mid, 3, **kw)
        else:
            num = RATIONAL_SCALES[float(cfg.rational_spatial_scale)][0] if cfg.rational else 2
            self.upsampler = Conv(mid, num * num * mid, 2, **kw)
        if cfg.rational:
            k = np.array([math.comb(4, i) for i in range(5)], np.float64)
            blur = (np.outer(k, k) / np.outer(k, k).sum()).astype(np.float32)
            self.blur_kernel = Buffer(jnp.asarray(blur[None, None]))  # torch (1, 1, 5, 5)
        self.post_upsample_res_blocks = nnx.List([ResBlock(mid, nd, **kw) for _ in range(cfg.num_blocks_per_stage)])
        self.final_conv = Conv(mid, cfg.in_channels, nd, **kw)

    def _per_frame(self, fn, x: jax.Array) -> jax.Array:
        b, t = x.shape[:2]
        y = fn(x.reshape(b * t, *x.shape[2:]))
        return y.reshape(b, t, *y.shape[1:])

    def _blur_down(self, x: jax.Array, stride: int) -> jax.Array:
        """Depthwise 5×5 binomial blur, zero padding 2, stride ``stride`` on (N, H, W, C)."""
        if stride == 1:
            return x
        c = x.shape[-1]
        k = jnp.broadcast_to(self.blur_kernel[...][0, 0][:, :, None, None], (5, 5, 1, c)).astype(x.dtype)
        return jax.lax.conv_general_dilated(x, k, (stride, stride), [(2, 2), (2, 2)],
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)

    def _upsample(self, x: jax.Array) -> jax.Array:
        """dims=3: (B, T, H, W, C) → upsampled, per frame for the spatial-only upsamplers."""
        if not self.config.temporal_upsample:
            return self._per_frame(self._spatial_2d, x)
        y = self.upsampler(x)
        if self.config.spatial_upsample:
            y = pixel_shuffle(y, (2, 2, 2))
        else:  # shuffle into time only: bring T next to the channels
            y = pixel_shuffle(y.transpose(0, 2, 3, 1, 4), (2,)).transpose(0, 3, 1, 2, 4)
        return y[:, 1:]  # the first latent frame encodes one pixel frame

    def __call__(self, latents: jax.Array) -> jax.Array:
        cfg = self.config
        if latents.ndim != 5 or latents.shape[-1] != cfg.in_channels:
            raise InputError(f"latents must be (B, T, H, W, {cfg.in_channels}) channels-last, got {latents.shape}")
        x = latents.astype(self.dtype)

        def body(h):
            h = jax.nn.silu(self.initial_norm(self.initial_conv(h)))
            for block in self.res_blocks:
                h = block(h)
            return h

        def tail(h):
            for block in self.post_upsample_res_blocks:
                h = block(h)
            return self.final_conv(h)

        if cfg.dims == 2:  # everything per frame
            return self._per_frame(lambda f: tail(self._spatial_2d(body(f))), x)
        return tail(self._upsample(body(x)))

    def _spatial_2d(self, frames: jax.Array) -> jax.Array:
        """Per-frame spatial upsampler on (N, H, W, C)."""
        cfg = self.config
        if cfg.rational:
            num, den = RATIONAL_SCALES[float(cfg.rational_spatial_scale)]
            return self._blur_down(pixel_shuffle(self.upsampler(frames), (num, num)), den)
        return pixel_shuffle(self.upsampler(frames), (2, 2))

    def upsample_normalized(self, latents: jax.Array, latents_mean: jax.Array, latents_std: jax.Array) -> jax.Array:
        """Normalised latents in and out: ``(up(z·σ + μ) − μ) / σ`` with the VAE's per-channel statistics."""
        mean = jnp.asarray(latents_mean, jnp.float32)
        std = jnp.asarray(latents_std, jnp.float32)
        raw = latents.astype(jnp.float32) * std + mean
        up = self(raw.astype(self.dtype)).astype(jnp.float32)
        return ((up - mean) / std).astype(latents.dtype)


__all__ = ["LTX2LatentUpsampler", "LTX2UpsamplerConfig", "pixel_shuffle", "Buffer", "DIFFUSERS_CLASS"]
