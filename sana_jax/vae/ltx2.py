"""The LTX-2 video VAE (diffusers ``AutoencoderKLLTX2Video``, ltx-core ``VideoEncoder``/``VideoDecoder``).

32×32 spatial and 8× temporal compression to 128 channels: frames ``1 + 8k → 1 + k``, sizes multiples of 32.
``encode`` returns *normalised* posterior means ``(μ − mean)/std`` with the checkpoint's per-channel statistics,
the space SANA-Video 720p and the LTX-2 DiT work in; ``decode`` takes normalised latents, optionally mixes in noise
(``z ← (1−s)·z + s·ε``) and conditions the decoder on ``timestep`` (×the learned ``timestep_scale_multiplier``),
returning video in [-1, 1] (not clamped, as the references). References:
``huggingface/diffusers:src/diffusers/models/autoencoders/autoencoder_kl_ltx2.py``,
``Lightricks/LTX-2:packages/ltx-core/src/ltx_core/model/video_vae/video_vae.py``.

Memory: ``decode(..., tile=…)`` decodes overlapping spatial tiles (``sana_jax.vae.tiling``) and
``decode(..., frames_per_chunk=…)`` overlapping temporal chunks (the decoder is not causal, so chunks overlap
and are blended); both bound activations by the tile, not the video.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sana_jax.config import ModelConfig, key_error
from sana_jax.errors import ConfigError, InputError
from sana_jax.nn.embeddings import TimestepEmbedding, timestep_sinusoid
from sana_jax.nn.layers import DType, param
from sana_jax.vae.common import PipelineVAE, check_video
from sana_jax.vae.ltx2_blocks import (CausalConv3d, Downsampler, ResGroup, ResnetBlock, Upsampler, depth_to_space,
                                      pixel_norm, space_to_depth)
from sana_jax.vae.stream_decode import LTX2StreamDecoder
from sana_jax.vae.tiling import tiled_apply

DIFFUSERS_CLASS = "AutoencoderKLLTX2Video"
_STRIDES = {"spatial": (1, 2, 2), "temporal": (2, 1, 1), "spatiotemporal": (2, 2, 2)}


class Buffer(nnx.Variable):
    """A checkpoint tensor that is not trained (latent statistics)."""


@dataclasses.dataclass(frozen=True)
class LTX2VAEConfig(ModelConfig):
    """Hyper-parameters, named as in diffusers' ``vae/config.json``; only the LTX-2 family's options."""

    CLASS_NAME = DIFFUSERS_CLASS
    FIXED = {"patch_size_t": 1}

    in_channels: int = 3
    latent_channels: int = 128
    block_out_channels: tuple[int, ...] = (256, 512, 1024, 2048)
    layers_per_block: tuple[int, ...] = (4, 6, 6, 2, 2)
    downsample_type: tuple[str, ...] = ("spatial", "temporal", "spatiotemporal", "spatiotemporal")
    decoder_block_out_channels: tuple[int, ...] = (256, 512, 1024)
    decoder_layers_per_block: tuple[int, ...] = (5, 5, 5, 5)
    upsample_type: tuple[str, ...] = ("spatiotemporal", "spatiotemporal", "spatiotemporal")
    upsample_residual: tuple[bool, ...] = (True, True, True)
    upsample_factor: tuple[int, ...] = (2, 2, 2)
    timestep_conditioning: bool = True
    patch_size: int = 4
    scaling_factor: float = 1.0
    encoder_causal: bool = True
    decoder_causal: bool = False
    encoder_spatial_padding_mode: str = "zeros"
    decoder_spatial_padding_mode: str = "reflect"

    def __post_init__(self):
        for f in ("block_out_channels", "layers_per_block", "downsample_type", "decoder_block_out_channels",
                  "decoder_layers_per_block", "upsample_type", "upsample_residual", "upsample_factor"):
            v = getattr(self, f)
            object.__setattr__(self, f, tuple(v) if isinstance(v, (list, tuple)) else (v,) * 3)
        if any(t not in _STRIDES for t in self.downsample_type + self.upsample_type):
            raise ConfigError(f"down/upsample types must be among {sorted(_STRIDES)}")
        if len(self.layers_per_block) != len(self.block_out_channels) + 1:
            raise ConfigError("layers_per_block needs one entry per down block plus one for the mid block")
        rev = tuple(reversed(self.decoder_block_out_channels))
        factors = tuple(reversed(self.upsample_factor))
        prev = rev[0]
        for ch, f in zip(rev, factors):  # diffusers adds a widening resnet when a block's input ≠ its output
            if prev != ch:
                raise ConfigError("decoder blocks that change width before upsampling are not supported "
                                  f"(width {prev} → {ch}); no released LTX-2 VAE has them")
            prev = ch // f

    @property
    def spatial_compression(self) -> int:
        return self.patch_size * 2 ** sum(_STRIDES[t][1] == 2 for t in self.downsample_type)

    @property
    def temporal_compression(self) -> int:
        return 2 ** sum(_STRIDES[t][0] == 2 for t in self.downsample_type)

    @classmethod
    def preset(cls, name: str = "ltx-2.0") -> "LTX2VAEConfig":
        """The LTX-2.0 VAE (``Lightricks/LTX-2`` ``vae/``; timestep-conditioned, non-causal decoder)."""
        if name not in ("ltx-2.0", "ltx2"):
            raise ConfigError(f"unknown LTX-2 VAE preset {name!r}; expected 'ltx-2.0'")
        return cls()

    @classmethod
    def _prepare(cls, config: dict, source: str) -> dict:
        if any(config.get("decoder_inject_noise") or ()):
            raise key_error(source, "decoder_inject_noise", "is not supported (no released LTX-2 VAE uses it)")
        for key in ("spatio_temporal_scaling", "decoder_spatio_temporal_scaling"):
            v = config.get(key, True)
            if not all(v if isinstance(v, (list, tuple)) else (v,)):
                raise key_error(source, key, "blocks without up/downsampling are not supported")
        return config

    @classmethod
    def from_native(cls, vae: Mapping[str, Any], source: str = "metadata") -> "LTX2VAEConfig":
        """From the ``config["vae"]`` metadata of a native LTX-2 checkpoint (``encoder_blocks``/``decoder_blocks``)."""
        def blocks(key):
            return [(n, {"num_layers": p} if isinstance(p, int) else dict(p)) for n, p in vae.get(key, [])]

        enc, dec = blocks("encoder_blocks"), blocks("decoder_blocks")
        kinds = {"compress_space_res": "spatial", "compress_time_res": "temporal", "compress_all_res": "spatiotemporal"}
        try:
            layers = [p["num_layers"] for n, p in enc[0::2]]
            downs = [kinds[n] for n, _ in enc[1::2]]
            mults = [p.get("multiplier", 2) for _, p in enc[1::2]]
            dec_layers = [p["num_layers"] for n, p in dec[0::2]]
            ups = [p for n, p in dec[1::2] if n == "compress_all"]
        except (KeyError, IndexError) as e:
            raise ConfigError(f"{source}: unsupported LTX VAE block layout ({e}); expected alternating "
                              "res_x / compress_*_res encoder blocks and res_x / compress_all decoder blocks") from e
        if len(ups) != len(dec[1::2]) or any(n != "res_x" for n, _ in enc[0::2] + dec[0::2]):
            raise ConfigError(f"{source}: unsupported LTX VAE block layout")
        latent = vae.get("latent_channels", 128)
        chans, c = [], latent
        for m in mults:
            c *= m
            chans.append(c)
        base = vae.get("decoder_base_channels", 128)
        fields = dict(latent_channels=latent, block_out_channels=tuple(chans), layers_per_block=tuple(layers),
                      downsample_type=tuple(downs),
                      decoder_block_out_channels=tuple(base * 2 ** (i + 1) for i in range(len(ups))),
                      decoder_layers_per_block=tuple(reversed(dec_layers)),
                      upsample_type=("spatiotemporal",) * len(ups),
                      upsample_residual=tuple(bool(p.get("residual", False)) for p in reversed(ups)),
                      upsample_factor=tuple(p.get("multiplier", 1) for p in reversed(ups)),
                      timestep_conditioning=vae.get("timestep_conditioning", True),
                      patch_size=vae.get("patch_size", 4), decoder_causal=vae.get("causal_decoder", False),
                      encoder_spatial_padding_mode=vae.get("encoder_spatial_padding_mode",
                                                           vae.get("spatial_padding_mode", "zeros")),
                      decoder_spatial_padding_mode=vae.get("decoder_spatial_padding_mode", "reflect"))
        return cls.build(fields, source)

    def _extra_keys(self) -> dict[str, Any]:
        blocks = len(self.block_out_channels)
        return dict(out_channels=self.in_channels, down_block_types=["LTX2VideoDownBlock3D"] * blocks,
                    spatio_temporal_scaling=[True] * blocks,
                    decoder_spatio_temporal_scaling=[True] * len(self.decoder_block_out_channels),
                    decoder_inject_noise=[False] * len(self.decoder_layers_per_block), resnet_norm_eps=1e-6)


class DownBlock(nnx.Module):
    def __init__(self, in_ch: int, out_ch: int, layers: int, kind: str, **kw):
        self.resnets = nnx.List([ResnetBlock(in_ch, timestep_conditioning=False, **kw) for _ in range(layers)])
        self.downsampler = Downsampler(in_ch, out_ch, _STRIDES[kind], **kw)

    def __call__(self, x, causal):
        for resnet in self.resnets:
            x = resnet(x, causal)
        return self.downsampler(x, causal)


class Encoder(nnx.Module):
    def __init__(self, cfg: LTX2VAEConfig, **kw):
        kw = dict(kw, padding_mode=cfg.encoder_spatial_padding_mode)
        self.patch = cfg.patch_size
        self.causal = cfg.encoder_causal
        self.conv_in = CausalConv3d(cfg.in_channels * cfg.patch_size ** 2, cfg.latent_channels, **kw)
        chans = (cfg.latent_channels, *cfg.block_out_channels)
        self.down_blocks = nnx.List([DownBlock(chans[i], chans[i + 1], cfg.layers_per_block[i], kind, **kw)
                                     for i, kind in enumerate(cfg.downsample_type)])
        self.mid_block = ResGroup(chans[-1], cfg.layers_per_block[-1], timestep_conditioning=False, **kw)
        self.conv_out = CausalConv3d(chans[-1], cfg.latent_channels + 1, **kw)

    def __call__(self, video: jax.Array) -> jax.Array:
        """Video (B, T, H, W, 3) → raw posterior means (B, T', H', W', latent)."""
        b, t, h, w, c = video.shape
        p = self.patch
        # patchify: channel order (c, w-offset, h-offset), the "weird patching order" of the reference
        x = video.reshape(b, t, h // p, p, w // p, p, c).transpose(0, 1, 2, 4, 6, 5, 3)
        x = x.reshape(b, t, h // p, w // p, -1)
        x = self.conv_in(x, self.causal)
        for block in self.down_blocks:
            x = block(x, self.causal)
        x = self.mid_block(x, self.causal)
        x = self.conv_out(jax.nn.silu(pixel_norm(x)), self.causal)
        return x[..., :-1]  # the last channel is the shared log-variance


class Decoder(nnx.Module):
    def __init__(self, cfg: LTX2VAEConfig, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        kw = dict(padding_mode=cfg.decoder_spatial_padding_mode, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        tc = cfg.timestep_conditioning
        self.patch = cfg.patch_size
        self.causal = cfg.decoder_causal
        rev = tuple(reversed(cfg.decoder_block_out_channels))
        factors = tuple(reversed(cfg.upsample_factor))
        layers = tuple(reversed(cfg.decoder_layers_per_block))
        residual = tuple(reversed(cfg.upsample_residual))
        self.conv_in = CausalConv3d(cfg.latent_channels, rev[0], **kw)
        self.mid_block = ResGroup(rev[0], layers[0], timestep_conditioning=tc, **kw)
        ups, groups, width = [], [], rev[0]
        for i, (ch, f) in enumerate(zip(rev, factors)):
            ups.append(Upsampler(width, _STRIDES[cfg.upsample_type[i]], residual[i], f, **kw))
            width = ch // f
            groups.append(ResGroup(width, layers[i + 1], timestep_conditioning=tc, **kw))
        self.upsamplers = nnx.List(ups)
        self.up_groups = nnx.List(groups)
        self.conv_out = CausalConv3d(width, 3 * cfg.patch_size ** 2, **kw)
        if tc:
            self.timestep_scale_multiplier = param(rngs, lambda k, s, t: jnp.full(s, 1000.0, t), (), (), jnp.float32)
            self.time_embedder = TimestepEmbedding(256, 2 * width, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            self.scale_shift_table = param(rngs, lambda k, s, t: jax.random.normal(k, s, t) / width ** 0.5,
                                           (2, width), (None, "conv_out"), param_dtype)
        else:
            self.timestep_scale_multiplier = self.time_embedder = self.scale_shift_table = nnx.data(None)

    def __call__(self, z: jax.Array, timestep: jax.Array | None) -> jax.Array:
        """Raw latents (B, T', H', W', latent) → video (B, 8(T'−1)+1, 32H', 32W', 3)."""
        scaled = None
        if self.time_embedder is not None:
            scaled = timestep.astype(jnp.float32) * self.timestep_scale_multiplier[...]
        x = self.conv_in(z, self.causal)
        x = self.mid_block(x, self.causal, scaled)
        for up, group in zip(self.upsamplers, self.up_groups):
            x = group(up(x, self.causal), self.causal, scaled)
        x = pixel_norm(x)
        if self.time_embedder is not None:
            emb = self.time_embedder(timestep_sinusoid(scaled).astype(x.dtype))
            mods = emb.reshape(emb.shape[0], 1, 1, 1, 2, -1) + self.scale_shift_table[...].astype(x.dtype)
            x = x * (1 + mods[..., 1, :]) + mods[..., 0, :]
        x = self.conv_out(jax.nn.silu(x), self.causal)
        b, t, h, w, _ = x.shape
        p = self.patch
        return x.reshape(b, t, h, w, 3, p, p).transpose(0, 1, 2, 6, 3, 5, 4).reshape(b, t, h * p, w * p, 3)


class LTX2VAE(PipelineVAE, nnx.Module):
    """Encoder + decoder + per-channel latent statistics. See the module docstring for the conventions."""

    def __init__(self, config: LTX2VAEConfig, *, dtype: DType = jnp.float32, param_dtype: DType = jnp.float32,
                 rngs: nnx.Rngs):
        self.config = config
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.encoder = Encoder(config, **kw)
        self.decoder = Decoder(config, **kw)
        self.latents_mean = Buffer(jnp.zeros((config.latent_channels,), jnp.float32))
        self.latents_std = Buffer(jnp.ones((config.latent_channels,), jnp.float32))

    # -- pipeline protocol -------------------------------------------------------------------------------------------

    @property
    def compression(self) -> tuple[int, int]:
        """(temporal, spatial): video frames per latent frame after the first, video pixels per latent pixel."""
        return self.config.temporal_compression, self.config.spatial_compression

    def decode_for_pipeline(self, latents: jax.Array, *, tile: int | None = None) -> jax.Array:
        """Normalised latents → video, decoded at timestep 0 (diffusers' default) without added noise."""
        return self.decode(latents, timestep=0.0, tile=tile)

    def stream_decoder(self, **options) -> LTX2StreamDecoder:
        """Decode chunk by chunk for streaming (:class:`~sana_jax.vae.stream_decode.LTX2StreamDecoder`): overlapping
        temporal windows, cross-faded; options ``overlap`` (latent frames, default 1) and ``tile`` (latent pixels)."""
        return LTX2StreamDecoder(self, **options)

    # -- latent space ------------------------------------------------------------------------------------------------

    def normalize(self, z: jax.Array) -> jax.Array:
        return (z - self.latents_mean[...]) * self.config.scaling_factor / self.latents_std[...]

    def denormalize(self, z: jax.Array) -> jax.Array:
        return z * self.latents_std[...] / self.config.scaling_factor + self.latents_mean[...]

    def check_latents(self, shape: tuple[int, ...]) -> None:
        check_video(shape, frame_step=1, frame_offset=1, spatial=1, channels=self.config.latent_channels,
                    what="latents")

    # -- public API --------------------------------------------------------------------------------------------------

    def encode(self, video: jax.Array, *, tile: int | None = None, overlap: int = 64) -> jax.Array:
        """Video (B, T, H, W, 3) in [-1, 1], T = 1 + 8k, H and W multiples of 32 → normalised latents.

        ``tile`` (pixels, a multiple of 32) encodes overlapping spatial tiles of that size, blended in latent space.
        """
        cfg = self.config
        check_video(video.shape, frame_step=cfg.temporal_compression, frame_offset=1, spatial=cfg.spatial_compression,
                    channels=cfg.in_channels)
        if tile is not None:
            _check_tile(tile, overlap, cfg.spatial_compression, "pixels")
            raw = tiled_apply(self.encoder, video, tile=tile, overlap=overlap, ratio=1 / cfg.spatial_compression)
        else:
            raw = self.encoder(video)
        return self.normalize(raw.astype(jnp.float32))

    def decode(self, latents: jax.Array, *, timestep: float | jax.Array = 0.0, noise_scale: float | None = None,
               noise: jax.Array | None = None, key: jax.Array | None = None, tile: int | None = None,
               overlap: int = 2, frames_per_chunk: int | None = None, frame_overlap: int = 1) -> jax.Array:
        """Normalised latents (B, T', H', W', C) → video (B, 8(T'−1)+1, 32H', 32W', 3) in about [-1, 1].

        Args:
          timestep: decode timestep (diffusers default 0.0; ltx-pipelines uses 0.05). Used when the decoder is
            timestep-conditioned.
          noise_scale: mix ``z ← (1−s)·z + s·ε`` before decoding (default: no noise). ``noise`` gives ε, else it is
            drawn from ``key``.
          tile / overlap: spatial tiles of ``tile`` latent pixels overlapping by ``overlap`` (bounded memory).
          frames_per_chunk / frame_overlap: temporal chunks of latent frames (bounded memory for long clips).
        """
        self.check_latents(latents.shape)
        z = latents.astype(jnp.float32)
        b = z.shape[0]
        if noise_scale:
            if noise is None:
                if key is None:
                    raise InputError("decode with noise_scale needs `noise` or a PRNG `key`")
                noise = jax.random.normal(key, z.shape, jnp.float32)
            z = (1 - noise_scale) * z + noise_scale * noise
        z = self.denormalize(z)
        t = jnp.broadcast_to(jnp.asarray(timestep, jnp.float32), (b,))

        def run(piece):
            return self.decoder(piece, t)

        if frames_per_chunk is not None and frames_per_chunk < z.shape[1]:
            return self._decode_temporal(z, run, tile, overlap, frames_per_chunk, frame_overlap)
        return self._decode_spatial(z, run, tile, overlap)

    def _decode_spatial(self, z, run, tile, overlap):
        if tile is None:
            return run(z)
        _check_tile(tile, overlap, 1, "latent pixels")
        return tiled_apply(run, z, tile=tile, overlap=overlap, ratio=self.config.spatial_compression)

    def _decode_temporal(self, z, run, tile, overlap, chunk, frame_overlap):
        """Decode chunks of latent frames. A chunk starting at latent a > 0 also decodes latent a−1 and drops its
        first output frame, so each chunk's frames line up with the whole clip's (frame 0 is special: 1 → 1 frame,
        every later latent frame → ``tc`` frames). Chunks overlap by ``frame_overlap`` latent frames and are blended
        with a linear ramp in pixel frames."""
        tc = self.config.temporal_compression
        n = z.shape[1]
        if not 0 <= frame_overlap < chunk:
            raise InputError(f"frame_overlap {frame_overlap} must be in [0, frames_per_chunk={chunk})")
        starts = list(range(0, n - chunk, chunk - frame_overlap)) + [n - chunk] if n > chunk else [0]
        out, total = None, None
        for i, a in enumerate(starts):
            lo = max(a - 1, 0)
            video = self._decode_spatial(z[:, lo:a + chunk], run, tile, overlap)
            if a > 0:
                video = video[:, 1:]
            first = 0 if a == 0 else 1 + tc * (a - 1)  # pixel frame of the chunk's first output frame
            length = video.shape[1]
            ramp = tc * frame_overlap
            pos = jnp.arange(length, dtype=jnp.float32)
            weight = jnp.ones(length)
            if i > 0:
                weight = weight * jnp.minimum(1.0, (pos + 0.5) / max(ramp, 1))
            if i < len(starts) - 1:
                weight = weight * jnp.minimum(1.0, (length - pos - 0.5) / max(ramp, 1))
            if out is None:
                frames = 1 + tc * (n - 1)
                out = jnp.zeros((video.shape[0], frames, *video.shape[2:]), jnp.float32)
                total = jnp.zeros((frames,), jnp.float32)
            out = out.at[:, first:first + length].add(video * weight[None, :, None, None, None])
            total = total.at[first:first + length].add(weight)
        return out / total[None, :, None, None, None]


def _check_tile(tile: int, overlap: int, multiple: int, unit: str) -> None:
    if tile % multiple or tile <= 0:
        raise InputError(f"tile {tile} {unit} must be a positive multiple of {multiple}")
    if not 0 <= overlap < tile:
        raise InputError(f"tile overlap {overlap} {unit} must be in [0, tile={tile})")


__all__ = ["LTX2VAE", "LTX2VAEConfig", "Buffer", "space_to_depth", "depth_to_space"]
