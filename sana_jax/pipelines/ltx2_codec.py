"""The LTX-2 VAE on normalised latents, jitted and keyed by the VAE's structure: :func:`decode_latents` (latents →
uint8 frames) and :func:`encode_frames` (frames → latents). The refiner and the two-stage pipeline (stage 1's
side-by-side decode) share the compiled functions."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sana_jax.io.video import to_uint8
from sana_jax.validate import check_finite


def _split(vae) -> tuple:
    return nnx.split(vae) if isinstance(vae, nnx.Module) else vae


@functools.partial(jax.jit, static_argnums=0, static_argnames=("tile", "frames_per_chunk", "noise_scale"))
def _decode_jit(graphdef, params, latents, timestep, key, *, tile=None, frames_per_chunk=None, noise_scale=None):
    vae = nnx.merge(graphdef, params)
    return vae.decode(latents, timestep=timestep, noise_scale=noise_scale, key=key, tile=tile,
                      frames_per_chunk=frames_per_chunk)


def decode_latents(vae, latents, *, tile: int | None = None, frames_per_chunk: int | None = None,
                   timestep: float = 0.0, noise_scale: float | None = None, key=None) -> np.ndarray:
    """Normalised latents → uint8 frames (B, T, H, W, 3) with an LTX-2 VAE (module or ``nnx.split`` pair), jitted
    and keyed by the VAE's structure (stage 1's and the refiner's VAE share the compiled decode). Defaults are
    diffusers': decode timestep 0, no noise (ltx-pipelines uses 0.05 / 0.025). ``tile``: latent pixels per spatial
    tile (a tile covering the whole latent is the untiled decode)."""
    graphdef, params = _split(vae)
    latents = jnp.asarray(latents, jnp.float32)
    if tile is not None and tile >= max(latents.shape[2:4]):
        tile = None
    if frames_per_chunk is not None and frames_per_chunk >= latents.shape[1]:
        frames_per_chunk = None
    if noise_scale and key is None:
        key = jax.random.key(0)
    video = _decode_jit(graphdef, params, latents, jnp.float32(timestep), key, tile=tile,
                        frames_per_chunk=frames_per_chunk, noise_scale=noise_scale or None)
    video = np.asarray(video)  # to_uint8 runs on the host copy
    check_finite(video, "LTX-2 VAE decoding")
    return to_uint8(video)


@functools.partial(jax.jit, static_argnums=0, static_argnames=("tile",))
def _encode_jit(graphdef, params, video, *, tile=None):
    return nnx.merge(graphdef, params).encode(video, tile=tile)


def encode_frames(vae, frames, *, tile: int | None = None) -> jax.Array:
    """uint8 (T, H, W, 3) or (B, T, H, W, 3) frames (or float in [-1, 1]) → normalised latents with an LTX-2 VAE
    (module or ``nnx.split`` pair). ``tile``: latent pixels per spatial tile (None: untiled)."""
    graphdef, params = _split(vae)
    spatial = (vae if isinstance(vae, nnx.Module) else nnx.merge(graphdef, params)).config.spatial_compression
    v = np.asarray(frames)
    if v.dtype == np.uint8:
        v = v.astype(np.float32) / 127.5 - 1.0
    if v.ndim == 4:
        v = v[None]
    return _encode_jit(graphdef, params, jnp.asarray(v, jnp.float32), tile=None if tile is None else tile * spatial)


__all__ = ["decode_latents", "encode_frames"]
