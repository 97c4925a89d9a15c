"""A small video autoencoder of our own design, the VAE of the embedded default model (``sana_jax/default_model``).

It compresses like Wan2.1 (frames 1 + 4k → 1 + k latent frames, 8× spatially) so the SANA-Video pipeline treats it
like the released VAEs, but it is cheap enough to train and run on two CPU cores:

* **encode**: frame 0 is repeated 3 times in front (causal first frame, as Wan), each group of 4 frames × 8 × 8
  pixels × 3 colours (768 values) becomes one latent pixel through a linear map, ``num_res_blocks`` residual
  3×3 convolutions at latent resolution (within each latent frame), and a linear map to the posterior mean and
  log-variance (``2·latent_channels``);
* **decode**: the mirror image, ending in a linear map back to 768 pixel values per latent pixel; the 3 padding
  frames are dropped.

Latents are normalised per channel, ``(mu − latents_mean) / latents_std`` (statistics measured on the training
data after the autoencoder is trained, stored in the config), as the pipeline expects of every VAE.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from sana_jax.config import ModelConfig
from sana_jax.errors import ConfigError, InputError
from sana_jax.nn.conv import conv
from sana_jax.vae.common import PipelineVAE
from sana_jax.vae.stream_decode import PatchStreamDecoder
from sana_jax.nn.layers import DType, Linear, param

CLASS_NAME = "SanaJaxPatchVAE"


@dataclasses.dataclass(frozen=True)
class PatchVAEConfig(ModelConfig):
    CLASS_NAME = CLASS_NAME
    RENAMED = {"temporal_factor": "temporal_compression", "spatial_factor": "spatial_compression"}  # older folders

    in_channels: int = 3
    latent_channels: int = 8
    hidden_channels: int = 128
    num_res_blocks: int = 2
    temporal_compression: int = 4
    spatial_compression: int = 8
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None

    def __post_init__(self):
        for name in ("latents_mean", "latents_std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
                if len(value) != self.latent_channels:
                    raise ConfigError(f"{name} has {len(value)} entries for {self.latent_channels} latent channels")
        if min(self.temporal_compression, self.spatial_compression, self.latent_channels, self.hidden_channels) < 1:
            raise ConfigError("factors and channel counts must be ≥ 1")

    @property
    def patch_values(self) -> int:
        return self.temporal_compression * self.spatial_compression ** 2 * self.in_channels


class ResBlock(nnx.Module):
    """``x + conv(silu(conv(silu(x))))`` with 3×3 kernels over (H, W), each latent frame on its own."""

    def __init__(self, channels: int, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3)
        self.dtype = dtype
        self.conv1 = param(rngs, init, (3, 3, channels, channels), (None, None, None, None), param_dtype)
        self.conv2 = param(rngs, nnx.initializers.zeros, (3, 3, channels, channels), (None, None, None, None),
                           param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        y = jax.nn.silu(x).reshape(b * t, h, w, c)
        y = conv(y, self.conv1[...].astype(self.dtype), padding=((1, 1), (1, 1)))
        y = conv(jax.nn.silu(y), self.conv2[...].astype(self.dtype), padding=((1, 1), (1, 1)))
        return x + y.reshape(b, t, h, w, c)


class _Stack(nnx.Module):
    def __init__(self, n_in: int, n_out: int, cfg: PatchVAEConfig, *, dtype: DType, param_dtype: DType,
                 rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.proj_in = Linear(n_in, cfg.hidden_channels, axes=(None, None), **kw)
        self.blocks = nnx.List([ResBlock(cfg.hidden_channels, **kw) for _ in range(cfg.num_res_blocks)])
        self.proj_out = Linear(cfg.hidden_channels, n_out, axes=(None, None), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.proj_in(x)
        for block in self.blocks:
            x = block(x)
        return self.proj_out(jax.nn.silu(x))


class PatchVAE(PipelineVAE, nnx.Module):
    """``encode(video) → normalised latents``, ``decode(latents) → video``; channels-last, video in [-1, 1]."""

    def __init__(self, config: PatchVAEConfig, *, dtype: DType = jnp.float32, param_dtype: DType = jnp.float32,
                 rngs: nnx.Rngs | None = None):
        rngs = rngs or nnx.Rngs(0)
        self.config, self.dtype = config, dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.encoder = _Stack(config.patch_values, 2 * config.latent_channels, config, **kw)
        self.decoder = _Stack(config.latent_channels, config.patch_values, config, **kw)

    # -- pipeline protocol -------------------------------------------------------------------------------------
    @property
    def compression(self) -> tuple[int, int]:
        return self.config.temporal_compression, self.config.spatial_compression

    def decode_for_pipeline(self, latents: jax.Array, *, tile: int | None = None) -> jax.Array:
        del tile  # small enough to decode whole
        return self.decode(latents)

    # -- the maths ---------------------------------------------------------------------------------------------
    def _stats(self, dtype):
        c = self.config
        mean = jnp.zeros(c.latent_channels, dtype) if c.latents_mean is None else jnp.asarray(c.latents_mean, dtype)
        std = jnp.ones(c.latent_channels, dtype) if c.latents_std is None else jnp.asarray(c.latents_std, dtype)
        return mean, std

    def posterior(self, video: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(mean, log-variance) of the un-normalised latent, each (B, T', H', W', latent_channels)."""
        cfg = self.config
        b, t, h, w, c = video.shape
        tf, s = cfg.temporal_compression, cfg.spatial_compression
        if c != cfg.in_channels or (t - 1) % tf or h % s or w % s:
            raise InputError(f"video must be (B, 1 + {tf}k, H, W, {cfg.in_channels}) with H, W multiples of {s}, "
                             f"got {video.shape}")
        x = jnp.concatenate([jnp.repeat(video[:, :1], tf - 1, axis=1), video], axis=1).astype(self.dtype)
        x = x.reshape(b, (t + tf - 1) // tf, tf, h // s, s, w // s, s, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
        out = self.encoder(x.reshape(*x.shape[:4], -1))
        mean, logvar = jnp.split(out.astype(jnp.float32), 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def encode(self, video: jax.Array, *, normalized: bool = True) -> jax.Array:
        mean, _ = self.posterior(video)
        if not normalized:
            return mean
        m, s = self._stats(mean.dtype)
        return (mean - m) / s

    def decode(self, latents: jax.Array, *, normalized: bool = True) -> jax.Array:
        """Video (B, 1 + tf·(T' − 1), H, W, C): latent frame 0 decodes to the clip's first frame alone."""
        return self.decode_continuation(latents, normalized=normalized)[:, self.config.temporal_compression - 1:]

    def decode_continuation(self, latents: jax.Array, *, normalized: bool = True) -> jax.Array:
        """Video (B, tf·T', H, W, C) of latents that continue a clip (every latent frame is tf frames; each is
        decoded on its own, so a clip decoded chunk by chunk equals the clip decoded whole)."""
        cfg = self.config
        if latents.ndim != 5 or latents.shape[-1] != cfg.latent_channels:
            raise InputError(f"latents must be (B, T', H', W', {cfg.latent_channels}), got {latents.shape}")
        z = latents.astype(jnp.float32)
        if normalized:
            m, s = self._stats(z.dtype)
            z = z * s + m
        b, t, h, w, _ = z.shape
        tf, s = cfg.temporal_compression, cfg.spatial_compression
        y = self.decoder(z.astype(self.dtype)).reshape(b, t, h, w, tf, s, s, cfg.in_channels)
        y = y.transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, t * tf, h * s, w * s, cfg.in_channels)
        return y.astype(jnp.float32)

    def stream_decoder(self, **options) -> PatchStreamDecoder:
        """Decode chunk by chunk for streaming, exactly (frames are decoded independently); no options."""
        return PatchStreamDecoder(self, **options)
