"""Block-causal (autoregressive) Wan2.1 DiT: the CausVid / Self-Forcing students, one-shot and with a KV cache.

References: ``tianweiy/CausVid:causvid/models/wan/causal_model.py`` and ``causal_inference.py``,
``guandeh17/Self-Forcing:wan/modules/causal_model.py`` and ``pipeline/causal_inference.py``; docs/streaming.md.
Same parameters as :class:`~sana_jax.models.wan.WanTransformer`. Latent frames are split into chunks (the
references' "blocks": 3 latent frames); a chunk attends to itself bidirectionally and to the committed chunks before
it, never to later ones. Two equivalent forms:

* :func:`causal_forward` — one pass over a whole clip under the block-causal mask (per-frame timesteps; training and
  the reference of the tests);
* :func:`init_state` + :func:`step` — one chunk at a time against a fixed-shape KV cache. Denoising calls use
  ``commit=False`` (the cache untouched: the chunk attends to the committed past plus its own K/V); the clean t = 0
  pass uses ``commit=True`` and writes the chunk's post-RoPE keys and values. The references overwrite the chunk's
  cache slots at every forward and leave the t = 0 pass's behind, which is the same thing.

The cache is a ring of ``cache_frames`` latent-frame slots per layer, of which the first ``sink_frames`` are pinned
to the stream's first frames (an attention sink). Frame f lives in slot f while f < sink, else in
sink + (f − sink) mod (cache − sink); a slot's frame index (−1: empty) masks the attention. Keys carry their
absolute RoPE positions (rotated before caching), so nothing moves when the window rolls and softmax, being
order-free, does not care where a slot sits. Self-Forcing's ``local_attn_size`` L and ``sink_size`` S (frames) are
``cache_frames = L − chunk``, ``sink_frames = S``; the released behaviour (no window) is a cache as long as the
video (21 latent frames in the references, which hard-code 1.3B at 480×832; here any size).

The per-chunk sampler is LongSANA's (:func:`sana_jax.models.sana_video_causal.sample_chunk`, the same re-noising
steps; CausVid's and Self-Forcing's timesteps are :func:`sana_jax.sampling.schedules.causvid_schedule` and
``self_forcing_schedule``), and :class:`StreamingDiT` jits it the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sana_jax.errors import InputError
from sana_jax.models import sana_video_causal as sc
from sana_jax.models.wan import WanTransformer

DEFAULT_MAX_FRAMES = sc.DEFAULT_MAX_FRAMES


def frame_visibility(sizes: Sequence[int], *, cache_frames: int | None = None, sink_frames: int = 0) -> np.ndarray:
    """(T, T) bool: may latent frame q attend to frame k, for chunks of ``sizes`` frames. Within a chunk, all;
    earlier chunks: all of them (``cache_frames`` None), or the first ``sink_frames`` frames and the last
    ``cache_frames − sink_frames`` frames before the chunk (what the ring cache holds); later chunks: none."""
    total = int(sum(sizes))
    starts = np.repeat(np.cumsum([0, *sizes[:-1]]), sizes)  # first frame of each frame's chunk
    ends = starts + np.repeat(np.asarray(sizes), sizes)
    k = np.arange(total)[None, :]
    visible = k < ends[:, None]
    if cache_frames is not None:
        past = k < starts[:, None]
        kept = (k < sink_frames) | (k >= starts[:, None] - (cache_frames - sink_frames))
        visible &= ~past | kept
    return visible


def _check_cache(cache_frames: int, sink_frames: int) -> None:
    if sink_frames < 0 or cache_frames < 1 or sink_frames >= cache_frames:
        raise InputError(f"the KV cache needs cache_frames >= 1 and 0 <= sink_frames < cache_frames, got "
                         f"cache_frames={cache_frames}, sink_frames={sink_frames}")


def causal_forward(model: WanTransformer, latents: jax.Array, text: jax.Array, timestep: jax.Array, *,
                   chunk: int | Sequence[int] = 3, cache_frames: int | None = None, sink_frames: int = 0,
                   t_offset: int = 0, max_frames: int = DEFAULT_MAX_FRAMES) -> jax.Array:
    """Block-causal velocity of a whole clip in one pass (equals streaming it chunk by chunk with :func:`step`).

    Args:
      latents, text, timestep: as ``WanTransformer.__call__``; ``timestep`` may be (B, T) per latent frame.
      chunk: latent frames per chunk (the remainder in the first, :func:`~sana_jax.models.sana_video_causal.
        split_frames`), or explicit sizes.
      cache_frames, sink_frames: the rolling window (:func:`frame_visibility`); None: every earlier chunk.
      t_offset: absolute latent frame of the first frame (RoPE).

    Memory: a dense (T·S)² boolean mask; for training-size clips, not for 480p 21-frame ones.
    """
    grid = model.check_latents(latents.shape)
    if model.config.patch_size[0] != 1:
        raise InputError("the causal Wan forms need a temporal patch of 1")
    sizes = sc.split_frames(grid[0], chunk) if isinstance(chunk, (int, np.integer)) else tuple(chunk)
    if sum(sizes) != grid[0]:
        raise InputError(f"chunk sizes {sizes} do not sum to the {grid[0]} latent frames")
    if cache_frames is not None:
        _check_cache(cache_frames, sink_frames)
    per_frame = grid[1] * grid[2]
    frames = frame_visibility(sizes, cache_frames=cache_frames, sink_frames=sink_frames)
    mask = jnp.asarray(np.repeat(np.repeat(frames, per_frame, 0), per_frame, 1))[None, None]
    x = model.embed_patches(latents)
    e0, e = model.embed_timestep(timestep, latents.shape[0], grid[0])
    x = model.run_blocks(x, e0, model.text_kv(text), model.rope(grid, t_offset, max_frames), mask=mask)
    return model.unpatchify(x, e, grid)


class StreamState(NamedTuple):
    """Everything the next chunk needs; its shapes never change (``layers`` leads every per-layer leaf).

    ``k``/``v`` (L, B, slots·S, heads, d): the committed post-RoPE keys and values, slot s holding the S tokens of
    one latent frame at [s·S, (s+1)·S); ``slot_frame`` (slots,) int32 the absolute latent frame in each slot (−1:
    empty); ``sink`` (int32) the pinned slots; ``text_k``/``text_v`` (L, B, L_text, heads, d) the prompt's
    cross-attention keys and values; ``frame`` the absolute latent frame of the next chunk.
    """

    k: jax.Array
    v: jax.Array
    slot_frame: jax.Array
    sink: jax.Array
    text_k: jax.Array
    text_v: jax.Array
    frame: jax.Array

    @property
    def cache_frames(self) -> int:
        return int(self.slot_frame.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(int(a.size) * a.dtype.itemsize for a in jax.tree.leaves(self))


def init_state(model: WanTransformer, text: jax.Array, text_mask=None, *, height: int, width: int,
               cache_frames: int, sink_frames: int = 0, t_offset: int = 0) -> StreamState:
    """The empty stream for latents of ``height`` × ``width`` (latent pixels), batch = ``text.shape[0]``, with a
    cache of ``cache_frames`` latent frames of which ``sink_frames`` are pinned (see the module docstring).
    ``text_mask`` is ignored: Wan's text is zero-padded and attended to whole."""
    del text_mask
    cfg = model.config
    _check_cache(cache_frames, sink_frames)
    b = text.shape[0]
    _, hp, wp = model.check_latents((b, 1, height, width, cfg.in_channels))
    text_k, text_v = model.text_kv(text)
    shape = (cfg.num_layers, b, cache_frames * hp * wp, cfg.num_attention_heads, cfg.attention_head_dim)
    return StreamState(k=jnp.zeros(shape, model.dtype), v=jnp.zeros(shape, model.dtype),
                       slot_frame=jnp.full((cache_frames,), -1, jnp.int32),
                       sink=jnp.asarray(sink_frames, jnp.int32), text_k=text_k, text_v=text_v,
                       frame=jnp.asarray(t_offset, jnp.int32))


def set_prompt(model: WanTransformer, state: StreamState, text: jax.Array, text_mask=None) -> StreamState:
    """Switch the prompt (interactive streaming): new cross-attention K/V, the video cache kept."""
    del text_mask
    text_k, text_v = model.text_kv(text)
    if text_k.shape != state.text_k.shape:
        raise InputError(f"new prompt gives K/V {text_k.shape}, the stream holds {state.text_k.shape}")
    return state._replace(text_k=text_k.astype(state.text_k.dtype), text_v=text_v.astype(state.text_v.dtype))


def _slot(state: StreamState, frame: jax.Array) -> jax.Array:
    ring = state.cache_frames - state.sink
    return jnp.where(frame < state.sink, frame, state.sink + (frame - state.sink) % ring)


def step(model: WanTransformer, state: StreamState, latents: jax.Array, timestep: jax.Array, *,
         commit: bool = False, max_frames: int = DEFAULT_MAX_FRAMES) -> tuple[jax.Array, StreamState | None]:
    """Velocity of one chunk ``latents`` (B, F, H, W, C) against the committed past.

    ``timestep``: scalar, (B,) or (B, F) per frame. ``commit=False`` returns ``(v, None)``; ``commit=True`` (the
    clean t = 0 pass) also returns the state with the chunk's keys and values in their slots and the frame offset
    advanced. Frames past the RoPE table (``max_frames``) give NaN velocities.
    """
    grid = model.check_latents(latents.shape)
    b, f = latents.shape[0], grid[0]
    per_frame = grid[1] * grid[2]
    if state.k.shape[1] != b or state.k.shape[2] != state.cache_frames * per_frame:
        raise InputError(f"chunk latents {latents.shape} do not match the stream's cache (batch {state.k.shape[1]}, "
                         f"{state.k.shape[2] // state.cache_frames} tokens per frame)")
    length = max(model.config.rope_max_seq_len, max_frames)
    rope = model.rope(grid, state.frame, length)
    x = model.embed_patches(latents)
    e0, e = model.embed_timestep(timestep, b, f)
    valid = jnp.repeat(state.slot_frame >= 0, per_frame)
    mask = jnp.concatenate([valid, jnp.ones((f * per_frame,), bool)])[None, None, None, :]
    graphdef, blocks = nnx.split(model.blocks)

    def body(h, xs):
        block_state, k, v, text_k, text_v = xs
        h, own = nnx.merge(graphdef, block_state)(h, e0, (text_k, text_v), rope, history=(k, v), mask=mask)
        return h, (own if commit else None)

    x, own = jax.lax.scan(body, x, (blocks, state.k, state.v, state.text_k, state.text_v))
    velocity = model.unpatchify(x, e, grid)
    velocity = jnp.where(state.frame + f <= length, velocity, jnp.nan)  # a gather past the table would clamp
    if not commit:
        return velocity, None
    k, v, slot_frame = state.k, state.v, state.slot_frame
    for i in range(f):  # frame by frame: a chunk may wrap around the ring
        slot = _slot(state, state.frame + i)
        new = slice(i * per_frame, (i + 1) * per_frame)
        k = jax.lax.dynamic_update_slice_in_dim(k, own[0][:, :, new].astype(k.dtype), slot * per_frame, axis=2)
        v = jax.lax.dynamic_update_slice_in_dim(v, own[1][:, :, new].astype(v.dtype), slot * per_frame, axis=2)
        slot_frame = slot_frame.at[slot].set(state.frame + i)
    return velocity, state._replace(k=k, v=v, slot_frame=slot_frame, frame=state.frame + f)


sample_chunk = functools.partial(sc.sample_chunk, step_fn=step)
sample_chunk.__doc__ = """:func:`sana_jax.models.sana_video_causal.sample_chunk` with the Wan :func:`step`."""


class StreamingDiT(sc.StreamingDiT):
    """The Wan streaming functions, jitted as :class:`sana_jax.models.sana_video_causal.StreamingDiT` jits
    LongSANA's. :meth:`init_state` takes the cache's size: ``frames`` (the stream's latent frames: a cache that holds
    them all, the released behaviour) or ``window`` (chunks of ``chunk_frames`` kept, plus ``sink`` chunks pinned)."""

    FUNCTIONS = {"step": step, "sample_chunk": sample_chunk, "init_state": init_state, "set_prompt": set_prompt}
    INIT_STATIC = ("height", "width", "cache_frames", "sink_frames")

    def init_state(self, text, text_mask=None, *, height: int, width: int, window: int | None = None,
                   t_offset: int = 0, frames: int | None = None, chunk_frames: int = 3, sink: int = 0
                   ) -> StreamState:
        if window is None:
            if frames is None:
                raise InputError("a Wan stream without a window needs its length (frames=) to size the KV cache")
            if sink:
                raise InputError("an attention sink needs a window (the cache holds every frame without one)")
            cache_frames, sink_frames = frames, 0
        else:
            cache_frames, sink_frames = (window + sink) * chunk_frames, sink * chunk_frames
        return self._init(self.params, text, text_mask, height=height, width=width, cache_frames=cache_frames,
                          sink_frames=sink_frames, t_offset=t_offset)
