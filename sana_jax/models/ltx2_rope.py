"""LTX-2 rotary position embeddings with fractional positions (diffusers ``LTX2AudioVideoRotaryPosEmbed``,
ltx-core ``Lightricks/LTX-2:packages/ltx-core/src/ltx_core/model/transformer/rope.py``).

Positions are ``[start, end)`` bounds per token in *pixel / second* units, shaped (B, axes, N, 2):

* video (axes t, h, w): latent frame ``f`` covers pixel frames ``[8f, 8f + 8)`` shifted by the causal first frame
  (``max(x + 1 − 8, 0)``) and divided by ``fps`` (seconds); rows ``[32i, 32i + 32)``, columns likewise;
* audio (axis t): latent step ``k`` covers mel frames ``[4k, 4k + 4)`` causally shifted, × hop / sample rate (s).

The midpoint, divided by the axis' maximum (20 s, 2048 px, 2048 px), gives a fraction ``p``; the angle of
frequency ``ω_j = θ^{j/(F−1)}·π/2`` is ``(2p − 1)·ω_j``. Angles are ordered frequency-major / axis-minor and
left-padded with identity slots to ``dim / 2``. For ``split`` RoPE the table is cut into ``heads`` contiguous slices
(one per head, pairs ``(x_i, x_{i+d/2})``); for ``interleaved`` RoPE the pairs are ``(x_{2i}, x_{2i+1})`` over the
full width. Coordinates and angles are float32; the frequency ladder is float64 when ``double_precision``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

RopeTables = tuple[jax.Array, jax.Array]


def video_coords(batch: int, frames: int, height: int, width: int, *, fps: float = 24.0,
                 scale_factors: Sequence[int] = (8, 32, 32), causal_offset: int = 1, patch_size: int = 1,
                 patch_size_t: int = 1) -> np.ndarray:
    """(B, 3, N, 2) float32 pixel-space bounds of a (frames, height, width) latent grid, tokens in (t, h, w) order
    (diffusers ``prepare_video_coords``; ltx-core ``VideoLatentTools`` + ``get_pixel_coords(causal_fix=True)``)."""
    axes = [np.arange(0, n, p, dtype=np.float32) for n, p in zip((frames, height, width),
                                                                 (patch_size_t, patch_size, patch_size))]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=0)  # (3, F, H, W)
    delta = np.asarray((patch_size_t, patch_size, patch_size), np.float32).reshape(3, 1, 1, 1)
    coords = np.stack([grid, grid + delta], axis=-1).reshape(3, -1, 2)
    coords = coords * np.asarray(scale_factors, np.float32).reshape(3, 1, 1)
    coords[0] = np.maximum(coords[0] + np.float32(causal_offset) - np.float32(scale_factors[0]), np.float32(0))
    coords[0] = coords[0] / np.float32(fps)
    return np.broadcast_to(coords[None], (batch, *coords.shape)).copy()


def audio_coords(batch: int, length: int, *, scale_factor: int = 4, hop_length: int = 160,
                 sampling_rate: int = 16000, causal_offset: int = 1, patch_size_t: int = 1,
                 shift: int = 0) -> np.ndarray:
    """(B, 1, L, 2) float32 bounds in seconds of ``length`` audio latent steps (diffusers ``prepare_audio_coords``)."""
    grid = np.arange(shift, length + shift, patch_size_t, dtype=np.float32)

    def seconds(mel):
        mel = np.maximum(mel + np.float32(causal_offset) - np.float32(scale_factor), np.float32(0))
        return mel * np.float32(hop_length) / np.float32(sampling_rate)

    start = seconds(grid * np.float32(scale_factor))
    end = seconds((grid + np.float32(patch_size_t)) * np.float32(scale_factor))
    coords = np.stack([start, end], axis=-1)[None]  # (1, L, 2)
    return np.broadcast_to(coords[None], (batch, 1, *coords.shape[1:])).copy()


def frequency_ladder(dim: int, n_axes: int, theta: float, double_precision: bool) -> np.ndarray:
    """``θ^linspace(0, 1, dim // (2·n_axes)) · π/2`` as float32 (computed in float64 when asked)."""
    dt = np.float64 if double_precision else np.float32
    ladder = np.power(dt(theta), np.linspace(0.0, 1.0, dim // (2 * n_axes), dtype=dt)) * dt(np.pi) / dt(2.0)
    return ladder.astype(np.float32)


def rope_tables(coords: jax.Array | np.ndarray, dim: int, max_pos: Sequence[float], *, heads: int,
                theta: float = 10000.0, double_precision: bool = True, rope_type: str = "split") -> RopeTables:
    """cos/sin tables for ``coords`` (B, axes, N, 2) bounds (or (B, axes, N) points).

    Returns (B, N, heads, dim/(2·heads)) tables for ``split`` (``LTXAttention`` splits by the table's own head
    count) and (B, N, dim/2) half-width tables for ``interleaved``."""
    coords = jnp.asarray(coords, jnp.float32)
    if coords.ndim == 4:
        coords = (coords[..., 0] + coords[..., 1]) / 2.0
    n_axes = coords.shape[1]
    if len(max_pos) < n_axes:
        raise ValueError(f"{n_axes} position axes but only {len(max_pos)} maxima {tuple(max_pos)}")
    frac = jnp.stack([coords[:, i] / jnp.float32(max_pos[i]) for i in range(n_axes)], axis=-1)  # (B, N, A)
    freqs = jnp.asarray(frequency_ladder(dim, n_axes, theta, double_precision))
    angles = (frac[..., None] * 2 - 1) * freqs  # (B, N, A, F)
    angles = jnp.swapaxes(angles, -1, -2).reshape(*angles.shape[:2], -1)  # frequency-major, axis-minor
    pad = dim // 2 - angles.shape[-1]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    if pad:
        cos = jnp.concatenate([jnp.ones((*cos.shape[:2], pad), cos.dtype), cos], axis=-1)
        sin = jnp.concatenate([jnp.zeros((*sin.shape[:2], pad), sin.dtype), sin], axis=-1)
    if rope_type == "split":
        if (dim // 2) % heads:
            raise ValueError(f"split RoPE of width {dim} cannot be cut into {heads} heads")
        return cos.reshape(*cos.shape[:2], heads, -1), sin.reshape(*sin.shape[:2], heads, -1)
    if rope_type != "interleaved":
        raise ValueError(f"rope_type must be 'split' or 'interleaved', got {rope_type!r}")
    return cos, sin


__all__ = ["video_coords", "audio_coords", "frequency_ladder", "rope_tables", "RopeTables"]
