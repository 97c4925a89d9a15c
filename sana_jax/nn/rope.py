"""3-D rotary position embedding of SANA-Video (diffusers ``WanRotaryPosEmbed`` in
``huggingface/diffusers:src/diffusers/models/transformers/transformer_sana_video.py``).

The head dimension is split into [t | h | w] parts with h = w = 2·(head_dim // 6) and t the rest (112 → 40/36/36).
Each axis has its own frequency ladder ``theta^(-2j/dim_axis)``; positions are integer post-patch indices from 0
(the temporal one may start at an offset, for streaming). Pairs are interleaved (GPT-J style):
``out[2i] = x[2i]·cos − x[2i+1]·sin``, ``out[2i+1] = x[2i]·sin + x[2i+1]·cos``.

Tables are built once in float64 with numpy and stored as float32, exactly as diffusers does, then rows are
gathered per position, so a traced temporal offset costs no recompilation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Head-dim split (t, h, w) of the 3-D RoPE."""
    h = w = 2 * (head_dim // 6)
    return head_dim - h - w, h, w


@functools.lru_cache(maxsize=32)
def _angle_table(dim: int, max_len: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    inv_freq = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64)[: dim // 2] / dim)
    angles = np.outer(np.arange(max_len, dtype=np.float64), inv_freq)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def rope_3d(grid: tuple[int, int, int], head_dim: int, *, theta: float = 10000.0, max_seq_len: int = 1024,
            t_offset: int | jax.Array = 0) -> tuple[jax.Array, jax.Array]:
    """cos and sin of the rotation angles for a (t, h, w) token grid, each of shape (t·h·w, head_dim // 2).

    Tokens are ordered (t, h, w) row-major. ``t_offset`` shifts the temporal positions (absolute RoPE when
    streaming chunk by chunk).
    """
    t, h, w = grid
    dims = axis_dims(head_dim)
    parts_cos, parts_sin = [], []
    positions = (jnp.arange(t) + t_offset, jnp.arange(h), jnp.arange(w))
    shapes = ((t, 1, 1), (1, h, 1), (1, 1, w))
    for dim, pos, shape in zip(dims, positions, shapes):
        cos, sin = _angle_table(dim, max_seq_len, float(theta))
        c = jnp.asarray(cos)[pos].reshape(*shape, dim // 2)
        s = jnp.asarray(sin)[pos].reshape(*shape, dim // 2)
        parts_cos.append(jnp.broadcast_to(c, (t, h, w, dim // 2)))
        parts_sin.append(jnp.broadcast_to(s, (t, h, w, dim // 2)))
    n = t * h * w
    return (jnp.concatenate(parts_cos, -1).reshape(n, head_dim // 2),
            jnp.concatenate(parts_sin, -1).reshape(n, head_dim // 2))


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate interleaved pairs of ``x`` (..., N, heads, head_dim) by angles (N, head_dim // 2), in float32."""
    x = x.astype(jnp.float32)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    return jnp.stack([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1).reshape(x.shape)
