"""Video latents ↔ DiT tokens: the patch embedding (a Conv3d with kernel = stride = patch, as a reshape and one
matmul) and its inverse after ``proj_out``, shared by the SANA-Video and Wan2.1 DiTs (both follow diffusers' layouts:
patch features ordered (dt, dh, dw, c) with c fastest, on both sides)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sana_jax.errors import ConfigError, InputError


def patch_tuple(patch) -> tuple[int, int, int]:
    """A config's ``patch_size``: one integer p (diffusers' 2-D form, (1, p, p)) or three; a :class:`ConfigError`
    otherwise."""
    out = (1, patch, patch) if isinstance(patch, int) else tuple(int(p) for p in patch)
    if len(out) != 3:
        raise ConfigError(f"patch_size must be (t, h, w), got {out}")
    return out


def check_latent_shape(shape: tuple[int, ...], in_channels: int, patch: tuple[int, int, int]) -> tuple[int, int, int]:
    """Validate a channels-last (B, T, H, W, C) latent shape; return the post-patch grid (T', H', W')."""
    if len(shape) != 5:
        raise InputError(f"latents must be (B, T, H, W, C) channels-last, got shape {shape}")
    _, t, h, w, c = shape
    if c != in_channels:
        raise InputError(f"latents have {c} channels; this model takes {in_channels} (channels-last)")
    for name, size, p in zip(("frames", "height", "width"), (t, h, w), patch):
        if size < p or size % p:
            lo, hi = size - size % p, size - size % p + p
            raise InputError(f"latent {name} {size} is not a multiple of the patch size {p}; "
                             f"nearest valid: {max(lo, p)} or {hi}")
    return t // patch[0], h // patch[1], w // patch[2]


def embed_patches(x: jax.Array, kernel: jax.Array, bias: jax.Array, patch: tuple[int, int, int],
                  dtype) -> jax.Array:
    """(B, T, H, W, C) → (B, T', H'·W', D) with ``kernel`` (pt, ph, pw, C, D) and ``bias`` (D,), in ``dtype``."""
    b, t, h, w, c = x.shape
    pt, ph, pw = patch
    x = x.astype(dtype).reshape(b, t // pt, pt, h // ph, ph, w // pw, pw, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, t // pt, (h // ph) * (w // pw), pt * ph * pw * c)
    return jnp.dot(x, kernel.astype(dtype).reshape(pt * ph * pw * c, -1)) + bias.astype(dtype)


def unpatchify(x: jax.Array, grid: tuple[int, int, int], patch: tuple[int, int, int]) -> jax.Array:
    """``proj_out``'s (B, T', H'·W', pt·ph·pw·C) → (B, T, H, W, C)."""
    b = x.shape[0]
    t, h, w = grid
    pt, ph, pw = patch
    x = x.reshape(b, t, h, w, pt, ph, pw, -1).transpose(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, t * pt, h * ph, w * pw, -1)
