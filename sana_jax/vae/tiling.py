"""Spatial tiling with overlap blending, shared by the VAEs' tiled encode and decode.

``tiled_apply(fn, x, tile=..., overlap=..., ratio=...)`` runs ``fn`` on equal-sized overlapping spatial tiles of
``x`` (B, T, H, W, C) and blends the results, whose spatial size is ``ratio`` × the tile's (``ratio`` = 32 for an
LTX-2 decode, 1/32 for its encode). All tiles have the same shape — the last one along each axis is aligned to the
edge — so ``fn`` compiles once, and the loop over tiles is a ``lax.fori_loop``: peak working memory is one tile's
activations plus the output, independent of the video size.

Blending: each tile's output is weighted by a separable linear ramp over the overlap on every side that has a
neighbour, and the weighted sum is divided by the summed weights (a partition of unity). Where tiles do not overlap
the result is exactly ``fn``'s; inside overlaps it is a convex mix of two tiles that each saw a different context,
so tiled and untiled results differ there by the model's sensitivity to context beyond the tile border.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

from sana_jax.errors import InputError


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of equal tiles of ``tile`` covering ``size`` with at least ``overlap`` overlap."""
    if tile >= size:
        return [0]
    stride = tile - overlap
    if stride <= 0:
        raise InputError(f"tile overlap {overlap} must be smaller than the tile {tile}")
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def _ramp(length: int, ramp: int, rise: jax.Array, fall: jax.Array) -> jax.Array:
    """1-D weights of one tile: linear rise over ``ramp`` samples if ``rise``, fall if ``fall``, else flat 1."""
    pos = jnp.arange(length, dtype=jnp.float32)
    up = jnp.where(rise, jnp.minimum(1.0, (pos + 0.5) / max(ramp, 1)), 1.0)
    down = jnp.where(fall, jnp.minimum(1.0, (length - pos - 0.5) / max(ramp, 1)), 1.0)
    return up * down


def tiled_apply(fn: Callable[[jax.Array], jax.Array], x: jax.Array, *, tile: int, overlap: int,
                ratio: float | Fraction) -> jax.Array:
    """Apply ``fn`` to overlapping spatial tiles of ``x`` (B, T, H, W, C) and blend (see the module docstring).

    ``tile`` and ``overlap`` are in ``x``'s pixels; ``tile·ratio`` and ``overlap·ratio`` must be whole numbers.
    """
    ratio = Fraction(ratio).limit_denominator(1024)
    h, w = x.shape[2], x.shape[3]
    th, tw = min(tile, h), min(tile, w)
    for name, v in (("tile", th), ("tile", tw), ("overlap", overlap)):
        if (v * ratio).denominator != 1:
            raise InputError(f"{name} {v} times the scale {ratio} is not a whole number of output pixels")
    hs, ws = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    if len(hs) * len(ws) == 1:
        return fn(x)
    out_shape = jax.eval_shape(fn, jax.ShapeDtypeStruct((*x.shape[:2], th, tw, x.shape[4]), x.dtype))
    oth, otw = out_shape.shape[2], out_shape.shape[3]
    ramp = int(overlap * ratio)
    grid = jnp.asarray(np.array([(a, b) for a in range(len(hs)) for b in range(len(ws))], np.int32))
    starts_h, starts_w = jnp.asarray(hs, jnp.int32), jnp.asarray(ws, jnp.int32)
    out_h, out_w = int(h * ratio), int(w * ratio)
    out = jnp.zeros((*out_shape.shape[:2], out_h, out_w, out_shape.shape[4]), jnp.float32)
    total = jnp.zeros((out_h, out_w), jnp.float32)
    num, den = ratio.numerator, ratio.denominator

    def body(k, carry):
        out, total = carry
        i, j = grid[k, 0], grid[k, 1]
        y0, x0 = starts_h[i], starts_w[j]
        piece = jax.lax.dynamic_slice(x, (0, 0, y0, x0, 0), (x.shape[0], x.shape[1], th, tw, x.shape[4]))
        y = fn(piece).astype(jnp.float32)
        wy = _ramp(oth, ramp, i > 0, i < len(hs) - 1)
        wx = _ramp(otw, ramp, j > 0, j < len(ws) - 1)
        weight = wy[:, None] * wx[None, :]
        oy, ox = y0 * num // den, x0 * num // den
        region = jax.lax.dynamic_slice(out, (0, 0, oy, ox, 0), y.shape)
        out = jax.lax.dynamic_update_slice(out, region + y * weight[:, :, None], (0, 0, oy, ox, 0))
        tot = jax.lax.dynamic_slice(total, (oy, ox), weight.shape)
        total = jax.lax.dynamic_update_slice(total, tot + weight, (oy, ox))
        return out, total

    out, total = jax.lax.fori_loop(0, len(grid), body, (out, total))
    return (out / total[:, :, None]).astype(out_shape.dtype)
