"""Wan2.1 video VAE (diffusers ``AutoencoderKLWan``), channels-last, with an exact single-pass and a chunked form.

Reference: ``huggingface/diffusers:src/diffusers/models/autoencoders/autoencoder_kl_wan.py`` (original:
``Wan-Video/Wan2.1:wan/modules/vae.py``). ``encode(video (B, T, H, W, 3) in [-1, 1])`` returns the normalised
posterior mean ``(mu − latents_mean) / latents_std`` of shape (B, 1 + (T−1)/4, H/8, W/8, z_dim); ``decode`` inverts
the normalisation, decodes and clamps to [-1, 1] like diffusers.

Two ways to run a clip, equal to diffusers' cached chunk loop (its ``feat_cache``) and to each other (~1e-6):

* single pass (default): every frame at once, causal convs over the whole sequence with zero history, the temporal
  resamplers' first-frame rules applied to frame 0. Simplest; memory grows with the clip length.
* ``chunked=True``: the first chunk (video frame 0 / latent frame 0) outside, then a ``lax.scan`` over the rest
  (4 video frames / 1 latent frame per step) carrying the cache pytree of :mod:`sana_jax.vae.wan_blocks`; the
  output is written in place into one buffer, so working memory does not depend on the clip length.
* ``decode_stream(latents, cache)``: the same scan, one call per piece of a clip with the cache carried between
  calls (streaming decode: each chunk's frames as soon as its latents exist, exact w.r.t. the whole clip).

``tile=`` adds spatial tiling (:func:`sana_jax.vae.tiling.tiled_apply`) on top of either form; ``tile`` and
``overlap`` are in the input's pixels (video pixels for encode, latent pixels for decode).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sana_jax.config import ModelConfig, key_error
from sana_jax.errors import ConfigError
from sana_jax.nn.layers import DType
from sana_jax.vae.common import PipelineVAE, check_video
from sana_jax.vae.stream_decode import WanStreamDecoder
from sana_jax.vae.tiling import tiled_apply
from sana_jax.vae.wan_blocks import CausalConv3d, MidBlock, Pointwise, Resample, ResidualBlock, RMSNorm, UpBlock

DIFFUSERS_CLASS = "AutoencoderKLWan"

WAN21_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                      0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


@dataclasses.dataclass(frozen=True)
class WanVAEConfig(ModelConfig):
    """Hyper-parameters of ``AutoencoderKLWan``, named as in its ``config.json`` (the defaults are Wan2.1's)."""

    CLASS_NAME = DIFFUSERS_CLASS
    FIXED = {"is_residual": False}  # the Wan2.2 VAE
    DERIVED = {"scale_factor_temporal": "temporal_compression", "scale_factor_spatial": "spatial_compression"}

    base_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN21_LATENTS_STD
    decoder_base_dim: int | None = None
    in_channels: int = 3
    out_channels: int = 3

    def __post_init__(self):
        for name in ("dim_mult", "attn_scales", "temperal_downsample", "latents_mean", "latents_std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "temperal_downsample", tuple(bool(v) for v in self.temperal_downsample))
        if self.attn_scales:
            raise ConfigError(f"attn_scales {list(self.attn_scales)} is not supported: diffusers' decoder ignores "
                              "it and no released Wan VAE uses it (expected [])")
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ConfigError(f"temperal_downsample has {len(self.temperal_downsample)} entries, expected "
                              f"len(dim_mult) - 1 = {len(self.dim_mult) - 1}")
        for name in ("latents_mean", "latents_std"):
            if len(getattr(self, name)) != self.z_dim:
                raise ConfigError(f"{name} has {len(getattr(self, name))} values, expected z_dim = {self.z_dim}")
        if any(s <= 0 for s in self.latents_std):
            raise ConfigError("latents_std must be positive")
        if self.num_res_blocks < 1 or self.base_dim < 1 or self.z_dim < 1:
            raise ConfigError("base_dim, z_dim and num_res_blocks must be positive")

    @property
    def dec_dim(self) -> int:
        return self.decoder_base_dim or self.base_dim

    @property
    def temporal_compression(self) -> int:
        """Video frames per latent frame after the first (4 for Wan2.1)."""
        return 2 ** sum(self.temperal_downsample)

    @property
    def spatial_compression(self) -> int:
        """Video pixels per latent pixel along H and W (8 for Wan2.1)."""
        return 2 ** (len(self.dim_mult) - 1)

    @classmethod
    def preset(cls, name: str) -> "WanVAEConfig":
        """``"wan2.1"``: the released Wan2.1 VAE (``Wan-AI/Wan2.1-T2V-1.3B-Diffusers/vae``, ``Wan2.1_VAE.pth``)."""
        if name.lower() in ("wan2.1", "wan21", "wan2.1-vae"):
            return cls()
        raise ConfigError(f"unknown Wan VAE preset {name!r}; expected 'wan2.1'")

    @classmethod
    def _prepare(cls, config: dict, source: str) -> dict:
        if config.get("patch_size") not in (None, 1):  # 1: no patchify, as null
            raise key_error(source, "patch_size", f"{config['patch_size']!r} (the Wan2.2 VAE) is not supported")
        return config

    def _extra_keys(self) -> dict[str, Any]:
        return {"dropout": 0.0, "patch_size": None}


class Encoder(nnx.Module):
    """``WanEncoder3d``: conv_in, a flat list of residual blocks and downsamplers, mid block, head."""

    def __init__(self, cfg: WanVAEConfig, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs | None):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        dims = [cfg.base_dim * u for u in (1, *cfg.dim_mult)]
        self.conv_in = CausalConv3d(cfg.in_channels, dims[0], **kw)
        blocks = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResidualBlock(cin, cout, **kw))
                cin = cout
            if i != len(cfg.dim_mult) - 1:
                mode = "downsample3d" if cfg.temperal_downsample[i] else "downsample2d"
                blocks.append(Resample(cout, mode, **kw))
        self.down_blocks = nnx.List(blocks)
        self.mid_block = MidBlock(dims[-1], **kw)
        self.norm_out = RMSNorm(dims[-1], param_dtype=param_dtype, rngs=rngs)
        self.conv_out = CausalConv3d(dims[-1], 2 * cfg.z_dim, **kw)

    def __call__(self, x: jax.Array, cache):
        first = cache is None
        c_in, c_down, c_mid, c_out = (None, [None] * len(self.down_blocks), None, None) if first else cache
        x, c_in = self.conv_in(x, c_in)
        c_down = list(c_down)
        for i, block in enumerate(self.down_blocks):
            x, c_down[i] = block(x, c_down[i])
        x, c_mid = self.mid_block(x, c_mid)
        x, c_out = self.conv_out(jax.nn.silu(self.norm_out(x)), c_out)
        return x, (c_in, tuple(c_down), c_mid, c_out)


class Decoder(nnx.Module):
    """``WanDecoder3d``: conv_in, mid block, up blocks (input width halved after the first), head."""

    def __init__(self, cfg: WanVAEConfig, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs | None):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        mult = cfg.dim_mult
        dims = [cfg.dec_dim * u for u in (mult[-1], *mult[::-1])]
        temporal_up = cfg.temperal_downsample[::-1]
        self.conv_in = CausalConv3d(cfg.z_dim, dims[0], **kw)
        self.mid_block = MidBlock(dims[0], **kw)
        blocks = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                cin //= 2  # Wan2.1: the upsampler before this stage halved the width
            mode = None
            if i != len(mult) - 1:
                mode = "upsample3d" if temporal_up[i] else "upsample2d"
            blocks.append(UpBlock(cin, cout, cfg.num_res_blocks, mode, **kw))
        self.up_blocks = nnx.List(blocks)
        self.norm_out = RMSNorm(dims[-1], param_dtype=param_dtype, rngs=rngs)
        self.conv_out = CausalConv3d(dims[-1], cfg.out_channels, **kw)

    def __call__(self, x: jax.Array, cache):
        first = cache is None
        c_in, c_mid, c_up, c_out = (None, None, [None] * len(self.up_blocks), None) if first else cache
        x, c_in = self.conv_in(x, c_in)
        x, c_mid = self.mid_block(x, c_mid)
        c_up = list(c_up)
        for i, block in enumerate(self.up_blocks):
            x, c_up[i] = block(x, c_up[i])
        x, c_out = self.conv_out(jax.nn.silu(self.norm_out(x)), c_out)
        return x, (c_in, c_mid, tuple(c_up), c_out)


class WanVAE(PipelineVAE, nnx.Module):
    """The Wan2.1 VAE. Parameter tree: ``encoder``, ``quant_conv``, ``post_quant_conv``, ``decoder`` with
    diffusers' sub-names (``converters/wan_vae.py`` maps the checkpoints)."""

    def __init__(self, config: WanVAEConfig, *, dtype: DType = jnp.float32, param_dtype: DType = jnp.float32,
                 rngs: nnx.Rngs | None = None):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.config = config
        self.dtype = dtype
        self.encoder = Encoder(config, **kw)
        self.quant_conv = Pointwise(2 * config.z_dim, 2 * config.z_dim, **kw)
        self.post_quant_conv = Pointwise(config.z_dim, config.z_dim, **kw)
        self.decoder = Decoder(config, **kw)

    # ----------------------------------------------------------------------------------------------- pipeline protocol

    @property
    def compression(self) -> tuple[int, int]:
        """(temporal, spatial): video frames per latent frame after the first, video pixels per latent pixel."""
        return self.config.temporal_compression, self.config.spatial_compression

    def decode_for_pipeline(self, latents: jax.Array, *, tile: int | None = None) -> jax.Array:
        """Normalised latents → video in [-1, 1], one latent frame at a time (``chunked``: bounded memory)."""
        return self.decode(latents, chunked=True, tile=tile)

    def stream_decoder(self, **options) -> WanStreamDecoder:
        """Decode chunk by chunk for streaming, exactly (:class:`~sana_jax.vae.stream_decode.WanStreamDecoder`: the
        causal-conv cache of :meth:`decode_stream` carried across chunks); no options."""
        return WanStreamDecoder(self, **options)

    # ----------------------------------------------------------------------------------------------- checks
    def check_video(self, shape) -> None:
        cfg = self.config
        check_video(tuple(shape), frame_step=cfg.temporal_compression, frame_offset=1, spatial=cfg.spatial_compression,
                    channels=cfg.in_channels, what="video")

    def check_latents(self, shape) -> None:
        check_video(tuple(shape), frame_step=1, frame_offset=1, spatial=1, channels=self.config.z_dim,
                    what="latents")

    # ----------------------------------------------------------------------------------------------- normalisation
    def _stats(self, dtype) -> tuple[jax.Array, jax.Array]:
        return (jnp.asarray(self.config.latents_mean, dtype), jnp.asarray(self.config.latents_std, dtype))

    def normalize(self, mu: jax.Array) -> jax.Array:
        """Posterior mean → model latents ``(mu − mean) / std``."""
        mean, std = self._stats(mu.dtype)
        return (mu - mean) / std

    def denormalize(self, z: jax.Array) -> jax.Array:
        """Model latents → posterior-mean scale ``z · std + mean`` (the VAE decoder's input)."""
        mean, std = self._stats(z.dtype)
        return z * std + mean

    # ----------------------------------------------------------------------------------------------- encode
    def _encode_chunk(self, x: jax.Array, cache):
        h, cache = self.encoder(x, cache)
        return self.quant_conv(h)[..., :self.config.z_dim], cache

    def _encode_single(self, x: jax.Array) -> jax.Array:
        return self._encode_chunk(x, None)[0]

    def _encode_chunked(self, x: jax.Array) -> jax.Array:
        f = self.config.temporal_compression
        y0, cache = self._encode_chunk(x[:, :1], None)
        steps = (x.shape[1] - 1) // f
        if steps == 0:
            return y0
        out = jnp.zeros((y0.shape[0], 1 + steps, *y0.shape[2:]), y0.dtype)
        out = jax.lax.dynamic_update_slice_in_dim(out, y0, 0, axis=1)

        def step(carry, i):
            out, cache = carry
            chunk = jax.lax.dynamic_slice_in_dim(x, 1 + f * (i - 1), f, axis=1)
            y, cache = self._encode_chunk(chunk, cache)
            return (jax.lax.dynamic_update_slice_in_dim(out, y.astype(out.dtype), i, axis=1), cache), None

        (out, _), _ = jax.lax.scan(step, (out, cache), jnp.arange(1, 1 + steps))
        return out

    def encode(self, video: jax.Array, *, chunked: bool = False, tile: int | None = None, overlap: int = 64,
               normalized: bool = True) -> jax.Array:
        """Video (B, T, H, W, 3) in [-1, 1], T = 1 + 4k, H and W multiples of 8 → latents (B, 1+k, H/8, W/8, z).

        Returns the posterior mean, normalised with ``latents_mean/std`` unless ``normalized=False``.
        ``tile``/``overlap`` (video pixels, multiples of 8) enable spatial tiling (diffusers: 256 and 64).
        """
        video = jnp.asarray(video)
        self.check_video(video.shape)
        fn = self._encode_chunked if chunked else self._encode_single
        if tile is not None:
            mu = tiled_apply(fn, video, tile=tile, overlap=overlap, ratio=Fraction(1, self.config.spatial_compression))
        else:
            mu = fn(video)
        return self.normalize(mu) if normalized else mu

    # ----------------------------------------------------------------------------------------------- decode
    def _decode_chunk(self, z: jax.Array, cache):
        return self.decoder(self.post_quant_conv(z), cache)

    def _decode_single(self, z: jax.Array) -> jax.Array:
        return self._decode_chunk(z, None)[0]

    def _decode_chunked(self, z: jax.Array) -> jax.Array:
        f = self.config.temporal_compression
        y0, cache = self._decode_chunk(z[:, :1], None)
        steps = z.shape[1] - 1
        if steps == 0:
            return y0
        out = jnp.zeros((y0.shape[0], 1 + f * steps, *y0.shape[2:]), y0.dtype)
        out = jax.lax.dynamic_update_slice_in_dim(out, y0, 0, axis=1)

        def step(carry, i):
            out, cache = carry
            y, cache = self._decode_chunk(jax.lax.dynamic_slice_in_dim(z, i, 1, axis=1), cache)
            return (jax.lax.dynamic_update_slice_in_dim(out, y.astype(out.dtype), 1 + f * (i - 1), axis=1),
                    cache), None

        (out, _), _ = jax.lax.scan(step, (out, cache), jnp.arange(1, 1 + steps))
        return out

    def decode_stream(self, latents: jax.Array, cache=None, *, normalized: bool = True) -> tuple[jax.Array, Any]:
        """Incremental decode for streaming: the next latent frames of a clip, given the previous call's cache.

        ``cache=None`` starts a clip (latent frame 0 → 1 video frame, every later one → 4); otherwise ``cache`` is
        what the previous call returned and every latent frame gives 4 video frames. Returns ``(video clamped to
        [-1, 1], cache)``; the cache's shapes do not depend on how many frames were decoded, so equal chunks reuse
        one executable, and the concatenated outputs equal ``decode(all_latents)`` (same per-frame ``lax.scan`` as
        ``chunked=True``: working memory of one latent frame).
        """
        latents = jnp.asarray(latents)
        self.check_latents(latents.shape)
        z = self.denormalize(latents) if normalized else latents
        pieces = []
        if cache is None:
            y0, cache = self._decode_chunk(z[:, :1], None)
            pieces.append(y0)
            z = z[:, 1:]
        if z.shape[1]:
            def step(cache, frame):
                y, cache = self._decode_chunk(frame[:, None], cache)
                return cache, y

            cache, ys = jax.lax.scan(step, cache, jnp.moveaxis(z, 1, 0))  # ys (T, B, 4, H, W, 3)
            ys = jnp.moveaxis(ys, 0, 1)
            pieces.append(ys.reshape(ys.shape[0], -1, *ys.shape[3:]).astype(pieces[0].dtype if pieces else ys.dtype))
        video = pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=1)
        return jnp.clip(video, -1.0, 1.0), cache

    def decode(self, latents: jax.Array, *, chunked: bool = False, tile: int | None = None, overlap: int = 8,
               normalized: bool = True) -> jax.Array:
        """Latents (B, T', h, w, z) → video (B, 1 + 4(T'−1), 8h, 8w, 3) clamped to [-1, 1].

        ``normalized=False`` takes posterior-mean-scale latents (what diffusers' ``decode`` takes).
        ``tile``/``overlap`` are in latent pixels (diffusers: 32 and 8); blending happens before the clamp.
        """
        latents = jnp.asarray(latents)
        self.check_latents(latents.shape)
        z = self.denormalize(latents) if normalized else latents
        fn = self._decode_chunked if chunked else self._decode_single
        if tile is not None:
            video = tiled_apply(fn, z, tile=tile, overlap=overlap, ratio=self.config.spatial_compression)
        else:
            video = fn(z)
        return jnp.clip(video, -1.0, 1.0)
