"""DC-AE-V, the deep-compression video autoencoder (DC-Gen ``dc_videogen/dc_ae_v.py``), channels-last.

32×32 spatial and 4× temporal compression, chunk-causal (bidirectional inside chunks of 40 frames, causal across
them), no attention: a 3-D conv ResNet with pixel-(un)shuffle resampling. Reference:
``dc-ai-projects/DC-Gen:dc_videogen/dc_ae_v.py`` (paper: DC-VideoGen, arXiv 2509.25182).

``encode(video (B, T, H, W, 3) in [-1, 1])`` → latents (B, T/4, H/32, W/32, C) × ``scaling_factor`` (0.7241 for
the released ``dc-ae-v-f32t4c32-1.0``); ``decode`` divides by it and returns video (B, 4T', 32H', 32W', 3) in
about [-1, 1] (not clamped, as the reference). T must be a multiple of 4 and H, W multiples of 32 (``InputError``
with the nearest valid values otherwise). Images: repeat the frame 4× and keep frame 0 of the decode (DC-Gen's
``reconstruct_image``).

Frame counts follow the released configuration, which always encodes in temporal tiles of ``chunk_frames`` (40)
frames with a feature cache and decodes in tiles of ``chunk_frames/4`` latents: the whole tiles form one
chunk-causal sequence, and a partial last tile (T mod 40 ≠ 0) is encoded — or decoded — on its own, with no
context from the frames before it (DC-Gen's ``DCAEV`` tiled encode/decode). Both forms below do exactly that:

* one shot (default): all whole chunks at once, each chunk-causal conv with the chunks as a reshaped batch axis;
* ``chunked=True``: a ``lax.scan`` over temporal tiles of ``chunks_per_step`` chunks carrying one frame per conv
  (the reference's ``feature_cache``), so activation memory is bounded by the tile, not the clip. Same numbers.

``tile=`` adds overlapping spatial tiles (:func:`sana_jax.vae.tiling.tiled_apply`) on top of either form; ``tile``
and ``overlap`` are in the input's pixels (video pixels for encode, latent pixels for decode).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import jax
import jax.numpy as jnp
from flax import nnx

from sana_jax.config import ModelConfig
from sana_jax.errors import ConfigError, InputError
from sana_jax.nn.layers import DType
from sana_jax.vae.common import PipelineVAE, check_video
from sana_jax.vae.dcae_v_blocks import ChunkConv3d, Downsample, ResStack, RMSNorm3d, Upsample
from sana_jax.vae.tiling import tiled_apply

CLASS_NAME = "DCAEVideo"
RELEASED_WIDTHS = (128, 256, 512, 512, 1024, 1024, 1024)
RELEASED_DEPTHS = (0, 5, 10, 4, 4, 4, 4)
RELEASED_SCALING_FACTOR = 0.7241  # DC-Gen pipeline_dc_videogen.py AEWrapper, dc-ae-v-f32t4c32-1.0
_PRESETS = {  # name → (latent channels, widths, depths, scaling factor); DC-Gen dc_ae_v_f32t4/f64t4_chunk_causal
    "dc-ae-v-f32t4c32-1.0": (32, RELEASED_WIDTHS, RELEASED_DEPTHS, RELEASED_SCALING_FACTOR),
    # The variants below share the code but have no published weights or scaling factor (1.0 here: pass yours).
    "dc-ae-v-f32t4c64-1.0": (64, RELEASED_WIDTHS, RELEASED_DEPTHS, 1.0),
    "dc-ae-v-f32t4c128-1.0": (128, RELEASED_WIDTHS, RELEASED_DEPTHS, 1.0),
    "dc-ae-v-f32t4c256-1.0": (256, RELEASED_WIDTHS, RELEASED_DEPTHS, 1.0),
    "dc-ae-v-f64t4c128-1.0": (128, RELEASED_WIDTHS + (1024,), RELEASED_DEPTHS + (4,), 1.0),
}


@dataclasses.dataclass(frozen=True)
class DCAEVConfig(ModelConfig):
    """Hyper-parameters of a chunk-causal DC-AE-V (encoder and decoder share widths and depths).

    Structure (DC-Gen ``dc_ae_v_f32t4_chunk_causal``): ``project_in`` conv + 2× spatial unshuffle to
    ``width_list[1]`` (stage 0 has depth 0); stages 1 … n−3 end in a 2× spatial downsample, stage n−2 in the
    ``temporal_compression``× temporal one; stage n−1 works at the latent frame rate. The decoder mirrors it.
    """

    latent_channels: int = 32
    in_channels: int = 3
    chunk_frames: int = 40
    width_list: tuple[int, ...] = RELEASED_WIDTHS
    depth_list: tuple[int, ...] = RELEASED_DEPTHS
    temporal_compression: int = 4
    scaling_factor: float = RELEASED_SCALING_FACTOR
    eps: float = 1e-5

    CLASS_NAME = CLASS_NAME
    RENAMED = {"chunk_size": "chunk_frames"}
    DERIVED = {"spatial_compression": "spatial_compression"}

    def __post_init__(self):
        object.__setattr__(self, "width_list", tuple(int(v) for v in self.width_list))
        object.__setattr__(self, "depth_list", tuple(int(v) for v in self.depth_list))
        n = len(self.width_list)
        if n < 3 or len(self.depth_list) != n:
            raise ConfigError(f"width_list and depth_list need the same length ≥ 3, got {list(self.width_list)} "
                              f"and {list(self.depth_list)}")
        if self.depth_list[0] != 0 or any(d <= 0 for d in self.depth_list[1:]):
            raise ConfigError(f"depth_list must be [0, d1, …] with every later depth > 0 (released: "
                              f"{list(RELEASED_DEPTHS)}), got {list(self.depth_list)}")
        tc = self.temporal_compression
        if tc < 1 or self.chunk_frames % tc or self.chunk_frames < tc:
            raise ConfigError(f"chunk_frames {self.chunk_frames} must be a positive multiple of the temporal "
                              f"compression {tc}")
        if self.width_list[1] % 4:
            raise ConfigError(f"width_list[1] = {self.width_list[1]} must be a multiple of 4 (2×2 unshuffle)")
        if self.scaling_factor <= 0 or self.latent_channels < 1:
            raise ConfigError("scaling_factor and latent_channels must be positive")

    @property
    def spatial_compression(self) -> int:
        return 2 ** (len(self.width_list) - 2)

    @property
    def latent_chunk(self) -> int:
        """Chunk length of the layers that run at the latent frame rate."""
        return self.chunk_frames // self.temporal_compression

    @classmethod
    def preset(cls, name: str = "dc-ae-v-f32t4c32-1.0", **overrides) -> DCAEVConfig:
        """A DC-Gen configuration by name (``-bf16`` suffix accepted): ``dc-ae-v-f32t4c32-1.0`` (the released
        weights, scaling factor 0.7241), ``dc-ae-v-f32t4c64-1.0`` (the c64 model of the SANA blog and DC-VideoGen
        figures), c128, c256 and ``dc-ae-v-f64t4c128-1.0``."""
        key = name.lower().removesuffix("-bf16")
        if key not in _PRESETS:
            raise ConfigError(f"unknown DC-AE-V preset {name!r}; expected one of {sorted(_PRESETS)}")
        latent, widths, depths, sf = _PRESETS[key]
        return cls(**{**dict(latent_channels=latent, width_list=widths, depth_list=depths, scaling_factor=sf),
                      **overrides})

    @classmethod
    def _prepare(cls, config: dict, source: str) -> dict:
        """Also reads the DC-Gen-style ``config.json`` of the tiny fixture: a ``preset`` the other keys override,
        ``chunk_size``, descriptive ``norm``/``act``."""
        act, norm = str(config.get("act", "silu")), str(config.get("norm", "rms3d"))
        if not act.startswith("silu") or not norm.startswith(("rms3d", "trms2d")):
            raise ConfigError(f"{source}: act {act!r} / norm {norm!r} are not DC-AE-V's silu / rms3d")
        if "preset" not in config:
            return config
        given = {k: v for k, v in config.items() if v is not None}
        return {**dataclasses.asdict(cls.preset(config["preset"])), **given}


def _stage_factors(cfg: DCAEVConfig, s: int) -> tuple[int, int, int]:
    """(spatial factor, temporal factor, conv chunk) of the resampler between stage s and s+1 (encoder view)."""
    n = len(cfg.width_list)
    return (1, cfg.temporal_compression, cfg.chunk_frames) if s == n - 2 else (2, 1, cfg.chunk_frames)


def _block_chunk(cfg: DCAEVConfig, s: int) -> int:
    return cfg.latent_chunk if s == len(cfg.width_list) - 1 else cfg.chunk_frames


class Stage(nnx.Module):
    """One stage: stacked residual blocks, and (encoder) a downsampler after them or (decoder) an upsampler
    before them. Stage 0 (depth 0) is empty."""

    def __init__(self, cfg: DCAEVConfig, s: int, decoder: bool, *, dtype: DType, param_dtype: DType,
                 rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        n, w, depth = len(cfg.width_list), cfg.width_list[s], cfg.depth_list[s]
        self.blocks = (ResStack(w, depth, chunk=_block_chunk(cfg, s), eps=cfg.eps, **kw) if depth
                       else nnx.data(None))
        self.down = self.up = nnx.data(None)
        if depth and s < n - 1:
            sf, tf, chunk = _stage_factors(cfg, s)
            if decoder:  # the temporal upsampler's conv runs before the shuffle, at the latent rate
                chunk = cfg.latent_chunk if s == n - 2 else chunk
                self.up = Upsample(cfg.width_list[s + 1], w, sf, tf, shortcut=True, chunk=chunk, **kw)
            else:
                self.down = Downsample(w, cfg.width_list[s + 1], sf, tf, shortcut=True, chunk=chunk, **kw)
        self.sf, self.tf = (_stage_factors(cfg, s)[:2] if depth and s < n - 1 else (1, 1))

    def init_cache(self, b: int, h: int, w: int, dtype: DType):
        """Zero caches for an input of spatial size (h, w) (the stage's input: before an upsampler)."""
        c_up = self.up.init_cache(b, h, w, dtype) if self.up is not None else None
        if self.up is not None:
            h, w = h * self.sf, w * self.sf
        c_blocks = self.blocks.init_cache(b, h, w, dtype) if self.blocks is not None else None
        c_down = self.down.init_cache(b, h, w, dtype) if self.down is not None else None
        return c_up, c_blocks, c_down

    def __call__(self, x: jax.Array, cache=None):
        c_up, c_blocks, c_down = (None, None, None) if cache is None else cache
        if self.up is not None:
            x, c_up = self.up(x, c_up)
        if self.blocks is not None:
            x, c_blocks = self.blocks(x, c_blocks)
        if self.down is not None:
            x, c_down = self.down(x, c_down)
        return x, (None if cache is None else (c_up, c_blocks, c_down))


class Encoder(nnx.Module):
    """``DCAEVEncoder``: project_in (conv + 2× unshuffle, no shortcut), stages, project_out conv (no shortcut)."""

    def __init__(self, cfg: DCAEVConfig, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.project_in = Downsample(cfg.in_channels, cfg.width_list[1], 2, 1, shortcut=False,
                                     chunk=cfg.chunk_frames, **kw)
        self.stages = nnx.List([Stage(cfg, s, False, **kw) for s in range(len(cfg.width_list))])
        self.project_out = ChunkConv3d(cfg.width_list[-1], cfg.latent_channels, chunk=cfg.latent_chunk, **kw)

    def init_cache(self, b: int, h: int, w: int, dtype: DType):
        c_in = self.project_in.init_cache(b, h, w, dtype)
        h, w = h // 2, w // 2
        stages = []
        for stage in self.stages:
            stages.append(stage.init_cache(b, h, w, dtype))
            h, w = h // stage.sf, w // stage.sf
        return c_in, tuple(stages), self.project_out.init_cache(b, h, w, dtype)

    def __call__(self, x: jax.Array, cache=None):
        c_in, c_stages, c_out = (None, [None] * len(self.stages), None) if cache is None else cache
        x, c_in = self.project_in(x, c_in)
        c_stages = list(c_stages)
        for s, stage in enumerate(self.stages):
            x, c_stages[s] = stage(x, c_stages[s])
        x, c_out = self.project_out(x, c_out)
        return x, (None if cache is None else (c_in, tuple(c_stages), c_out))


class ProjectOut(nnx.Module):
    """Decoder head: RMSNorm3d → SiLU → conv + 2× pixel shuffle to the video channels (no shortcut)."""

    def __init__(self, cfg: DCAEVConfig, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        self.norm = RMSNorm3d(cfg.width_list[1], eps=cfg.eps, param_dtype=param_dtype, rngs=rngs)
        self.up = Upsample(cfg.width_list[1], cfg.in_channels, 2, 1, shortcut=False, chunk=cfg.chunk_frames,
                           dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, cache=None):
        return self.up(jax.nn.silu(self.norm(x)), cache)


class Decoder(nnx.Module):
    """``DCAEVDecoder``: project_in conv (no shortcut), stages from the last to the first, project_out."""

    def __init__(self, cfg: DCAEVConfig, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.project_in = ChunkConv3d(cfg.latent_channels, cfg.width_list[-1], chunk=cfg.latent_chunk, **kw)
        self.stages = nnx.List([Stage(cfg, s, True, **kw) for s in range(len(cfg.width_list))])
        self.project_out = ProjectOut(cfg, **kw)

    def init_cache(self, b: int, h: int, w: int, dtype: DType):
        c_in = self.project_in.init_cache(b, h, w, dtype)
        stages = [None] * len(self.stages)
        for s in reversed(range(len(self.stages))):
            stages[s] = self.stages[s].init_cache(b, h, w, dtype)
            h, w = h * self.stages[s].sf, w * self.stages[s].sf
        return c_in, tuple(stages), self.project_out.up.init_cache(b, h, w, dtype)

    def __call__(self, z: jax.Array, cache=None):
        c_in, c_stages, c_out = (None, [None] * len(self.stages), None) if cache is None else cache
        x, c_in = self.project_in(z, c_in)
        c_stages = list(c_stages)
        for s in reversed(range(len(self.stages))):
            x, c_stages[s] = self.stages[s](x, c_stages[s])
        x, c_out = self.project_out(x, c_out)
        return x, (None if cache is None else (c_in, tuple(c_stages), c_out))


class DCAEVideo(PipelineVAE, nnx.Module):
    """DC-AE-V. Parameter tree ``encoder``/``decoder`` (``converters/dcae_v.py`` maps the DC-Gen state dict)."""

    def __init__(self, config: DCAEVConfig, *, dtype: DType = jnp.float32, param_dtype: DType = jnp.float32,
                 rngs: nnx.Rngs | None = None):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.config, self.dtype = config, dtype
        self.encoder = Encoder(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.decoder = Decoder(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    # ------------------------------------------------------------------------------------------------ pipeline protocol
    #: Frame rule of the pipelines: frames = t·k (every latent frame holds t video frames; no special first frame).
    causal_first_frame = False

    @property
    def compression(self) -> tuple[int, int]:
        """(temporal, spatial): video frames per latent frame, video pixels per latent pixel."""
        return self.config.temporal_compression, self.config.spatial_compression

    def encode_for_pipeline(self, video: jax.Array) -> jax.Array:
        """Video (B, T, H, W, 3) → normalised latents (× ``scaling_factor``), scanned over chunks. A single frame
        (an image) is repeated ``temporal_compression`` times first, as DC-Gen's ``reconstruct_image`` and Sana's
        ``encode_single`` do, so it gives one latent frame."""
        video = jnp.asarray(video)
        if video.ndim == 5 and video.shape[1] == 1:
            video = jnp.repeat(video, self.config.temporal_compression, axis=1)
        return self.encode(video, chunked=True)

    def decode_for_pipeline(self, latents: jax.Array, *, tile: int | None = None) -> jax.Array:
        """Normalised latents (÷ ``scaling_factor`` inside) → video, scanned over latent chunks (bounded memory)."""
        return self.decode(latents, chunked=True, tile=tile)

    # ------------------------------------------------------------------------------------------------ checks
    def check_video(self, shape) -> None:
        cfg = self.config
        check_video(tuple(shape), frame_step=cfg.temporal_compression, frame_offset=0,
                    spatial=cfg.spatial_compression, channels=cfg.in_channels, what="video")

    def check_latents(self, shape) -> None:
        check_video(tuple(shape), frame_step=1, frame_offset=0, spatial=1, channels=self.config.latent_channels,
                    what="latents")

    # ------------------------------------------------------------------------------------------------ temporal tiles
    def _run(self, module, x: jax.Array, chunk: int, chunked: bool, chunks_per_step: int) -> jax.Array:
        """``module`` over the whole chunks of ``x`` as one chunk-causal sequence (one shot or scanned), then over
        the partial last chunk on its own (the reference's partial last temporal tile)."""
        t = x.shape[1]
        full = t - t % chunk
        parts = []
        if full:
            head = x[:, :full] if full < t else x
            parts.append(self._scanned(module, head, chunk, chunks_per_step) if chunked else module(head)[0])
        if full < t:
            parts.append(module(x[:, full:])[0])
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)

    def _scanned(self, module, x: jax.Array, chunk: int, chunks_per_step: int) -> jax.Array:
        """``lax.scan`` over tiles of k chunks, k the largest divisor of the chunk count that is ≤
        ``chunks_per_step``, carrying the cache (zeros at the start: the clip starts here)."""
        b, t, h, w, _ = x.shape
        chunks = t // chunk
        k = max(d for d in range(1, min(chunks_per_step, chunks) + 1) if chunks % d == 0)
        size, n = chunk * k, chunks // k

        def body(cache, i):
            y, cache = module(jax.lax.dynamic_slice_in_dim(x, i * size, size, axis=1), cache)
            return cache, y

        _, ys = jax.lax.scan(body, module.init_cache(b, h, w, self.dtype), jnp.arange(n))
        ys = ys.swapaxes(0, 1)  # (B, n, tile, …): a free reshape for B = 1
        return ys.reshape(b, n * ys.shape[2], *ys.shape[3:])

    # ------------------------------------------------------------------------------------------------ encode
    def _encode_raw(self, video: jax.Array, chunked: bool, chunks_per_step: int) -> jax.Array:
        return self._run(self.encoder, video.astype(self.dtype), self.config.chunk_frames, chunked,
                         chunks_per_step)

    def encode(self, video: jax.Array, *, chunked: bool = False, chunks_per_step: int = 1, tile: int | None = None,
               overlap: int = 128, normalized: bool = True) -> jax.Array:
        """Video (B, T, H, W, 3) in [-1, 1], T a multiple of 4, H and W multiples of 32 → latents
        (B, T/4, H/32, W/32, C), multiplied by ``scaling_factor`` unless ``normalized=False``.

        ``chunked``: scan over temporal tiles of up to ``chunks_per_step`` × ``chunk_frames`` frames (same result,
        memory bounded by the tile). ``tile``/``overlap`` (video pixels, multiples of 32): spatial tiles, blended.
        """
        video = jnp.asarray(video)
        self.check_video(video.shape)
        cfg = self.config
        _check_steps(chunks_per_step)

        def fn(v):
            return self._encode_raw(v, chunked, chunks_per_step)

        if tile is not None:
            _check_tile(tile, overlap, cfg.spatial_compression, "video pixels")
            z = tiled_apply(fn, video, tile=tile, overlap=overlap, ratio=Fraction(1, cfg.spatial_compression))
        else:
            z = fn(video)
        return z * cfg.scaling_factor if normalized else z

    # ------------------------------------------------------------------------------------------------ decode
    def _decode_raw(self, z: jax.Array, chunked: bool, chunks_per_step: int) -> jax.Array:
        return self._run(self.decoder, z.astype(self.dtype), self.config.latent_chunk, chunked, chunks_per_step)

    def decode(self, latents: jax.Array, *, chunked: bool = False, chunks_per_step: int = 1,
               tile: int | None = None, overlap: int = 4, normalized: bool = True) -> jax.Array:
        """Latents (B, T', h, w, C) → video (B, 4T', 32h, 32w, 3), not clamped (as the reference).

        ``normalized=False`` takes the encoder's raw output (no division by ``scaling_factor``). ``chunked``: scan
        over tiles of ``chunks_per_step`` × ``chunk_frames/4`` latents. ``tile``/``overlap``: spatial tiles in
        latent pixels, blended in pixel space.
        """
        latents = jnp.asarray(latents)
        self.check_latents(latents.shape)
        cfg = self.config
        _check_steps(chunks_per_step)
        z = latents / cfg.scaling_factor if normalized else latents

        def fn(v):
            return self._decode_raw(v, chunked, chunks_per_step)

        if tile is not None:
            _check_tile(tile, overlap, 1, "latent pixels")
            return tiled_apply(fn, z, tile=tile, overlap=overlap, ratio=cfg.spatial_compression)
        return fn(z)


def _check_steps(chunks_per_step: int) -> None:
    if not isinstance(chunks_per_step, int) or chunks_per_step < 1:
        raise InputError(f"chunks_per_step must be a positive integer, got {chunks_per_step!r}")


def _check_tile(tile: int, overlap: int, multiple: int, unit: str) -> None:
    if tile <= 0 or tile % multiple:
        raise InputError(f"tile {tile} {unit} must be a positive multiple of {multiple}")
    if overlap < 0 or overlap % multiple or overlap >= tile:
        raise InputError(f"tile overlap {overlap} {unit} must be a multiple of {multiple} in [0, tile={tile})")


__all__ = ["CLASS_NAME", "RELEASED_SCALING_FACTOR", "DCAEVConfig", "DCAEVideo"]
