"""Streaming VAE decode: a clip's latents pushed chunk by chunk, each chunk's frames returned as soon as possible
(what ``StreamingPipeline`` writes to the mp4 while the DiT computes the next chunk).

A VAE that can stream has ``stream_decoder(**options)`` returning a :class:`StreamDecoder`:

* :class:`WanStreamDecoder` (``WanVAE.stream_decoder()``) — exact: the causal-conv cache is carried across chunks,
  so the frames equal decoding the whole clip at once;
* :class:`PatchStreamDecoder` (``PatchVAE.stream_decoder()``, the embedded default model's) — exact: latent
  frames decode independently;
* :class:`LTX2StreamDecoder` (``LTX2VAE.stream_decoder(overlap=1, tile=None)``) — the LTX-2 decoder is not causal:
  overlapping temporal windows, cross-faded.
"""

from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sana_jax.errors import InputError


class StreamDecoder(Protocol):
    """``reset()`` starts a clip; ``push(latents (B, T', h, w, C))`` → that chunk's video (B, T, H, W, 3) float;
    ``flush()`` → frames still held back at the clip's end (or None); ``state_bytes``: what is carried between
    pushes; ``traces``: Python traces of its jitted functions (a test hook)."""

    traces: int

    def reset(self) -> None: ...

    def push(self, latents: jax.Array) -> jax.Array: ...

    def flush(self) -> jax.Array | None: ...

    @property
    def state_bytes(self) -> int: ...


def _nbytes(tree) -> int:
    return sum(int(a.size) * a.dtype.itemsize for a in jax.tree.leaves(tree))


class WanStreamDecoder:
    """Wan2.1 VAE decode one chunk at a time, exact: ``push(latents)`` returns the chunk's frames (the first push
    of a clip gives 1 + 4(T−1) frames, later ones 4T), carrying the causal-conv cache (``WanVAE.decode_stream``).

    Two executables serve every chunk size: the clip's first latent frame (no cache), and one latent frame with
    the cache (called per frame; the cache is donated)."""

    def __init__(self, vae, **options):
        if options:
            raise InputError(f"the Wan VAE's streaming decoder takes no options, got {sorted(options)}")
        self.graphdef, self.params = nnx.split(vae)
        self.traces = 0
        self.cache = None

        def frame(params, latents, cache):
            self.traces += 1
            return nnx.merge(self.graphdef, params).decode_stream(latents, cache)

        self._frame = jax.jit(frame, donate_argnums=(2,))

    def reset(self) -> None:
        self.cache = None

    def push(self, latents: jax.Array) -> jax.Array:
        pieces = []
        for i in range(latents.shape[1]):
            video, self.cache = self._frame(self.params, latents[:, i:i + 1], self.cache)
            pieces.append(video)
        return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=1)

    def flush(self) -> jax.Array | None:
        """Nothing is held back by a causal decoder."""
        return None

    @property
    def state_bytes(self) -> int:
        return _nbytes(self.cache)


class PatchStreamDecoder:
    """PatchVAE decode one chunk at a time, exact and stateless: the clip's first chunk drops latent frame 0's
    ``tf − 1`` leading frames as :meth:`PatchVAE.decode` does, later chunks give ``tf`` frames per latent frame.
    One executable per chunk shape (two in a stream)."""

    def __init__(self, vae, **options):
        if options:
            raise InputError(f"the PatchVAE's streaming decoder takes no options, got {sorted(options)}")
        self.graphdef, self.params = nnx.split(vae)
        self.traces = 0
        self.started = False

        def decode(params, latents, first: bool):
            self.traces += 1
            vae = nnx.merge(self.graphdef, params)
            return vae.decode(latents) if first else vae.decode_continuation(latents)

        self._decode = jax.jit(decode, static_argnums=(2,))

    def reset(self) -> None:
        self.started = False

    def push(self, latents: jax.Array) -> jax.Array:
        video = self._decode(self.params, latents, not self.started)
        self.started = True
        return video

    def flush(self) -> jax.Array | None:
        return None

    @property
    def state_bytes(self) -> int:
        return 0


class LTX2StreamDecoder:
    """LTX-2 VAE decode one chunk at a time with overlapping temporal windows (its decoder is not causal).

    A chunk of latents [a, a+n) is decoded together with the previous ``overlap + 1`` latent frames: the first
    one anchors the decoder's first-frame rule and its output frame is dropped (as ``LTX2VAE.decode``'s temporal
    chunks do), the next ``overlap`` re-decode the frames held back from the previous chunk, which are cross-faded
    with them by the same linear ramp (weights summing to 1). The last ``overlap`` latent frames' pixels are held
    back until the next push or :meth:`flush`. Memory: one window of ``n + overlap + 1`` latent frames. The decode
    compiles once per window length: the first chunk's (its own frames) and the later chunks' (``n + overlap + 1``;
    with LongSANA's first chunk one frame longer and ``overlap=0`` they are the same). ``timestep``, ``tile`` and
    ``tile_overlap`` go to ``LTX2VAE.decode`` (``tile``: spatial tiles of that many latent pixels).
    """

    def __init__(self, vae, *, overlap: int = 1, timestep: float = 0.0, tile: int | None = None,
                 tile_overlap: int = 2):
        if not isinstance(overlap, (int, np.integer)) or overlap < 0:
            raise InputError(f"LTX-2 stream decode overlap must be an integer >= 0 latent frames, got {overlap!r}")
        self.graphdef, self.params = nnx.split(vae)
        self.overlap = overlap
        self.traces = 0
        self.hist = self.tail = None
        hold = vae.compression[0] * overlap  # pixel frames held back
        ramp = (np.arange(hold, dtype=np.float32) + 0.5) / max(hold, 1)  # weight of the new window

        def window(params, latents):
            self.traces += 1
            vae = nnx.merge(self.graphdef, params)
            return vae.decode(latents, timestep=timestep, tile=tile, overlap=tile_overlap).astype(jnp.float32)

        def post(video, window, tail):
            if tail is not None:  # drop the anchor's frame; the next `hold` frames overlap the held-back tail
                video = video[:, 1:]
                if hold:
                    w = jnp.asarray(ramp)[None, :, None, None, None]
                    video = video.at[:, :hold].set(w * video[:, :hold] + (1 - w) * tail)
            cut = video.shape[1] - hold
            return video[:, :cut], window[:, -(overlap + 1):], video[:, cut:]

        self._window = jax.jit(window)
        self._post = jax.jit(post)

    def reset(self) -> None:
        self.hist = self.tail = None

    def push(self, latents: jax.Array) -> jax.Array:
        if self.hist is None and latents.shape[1] <= self.overlap:
            raise InputError(f"the first LTX-2 chunk needs more than overlap={self.overlap} latent frames, got "
                             f"{latents.shape[1]}")
        win = latents if self.hist is None else jnp.concatenate([self.hist, latents], axis=1)
        video = self._window(self.params, win)
        emit, self.hist, self.tail = self._post(video, win, self.tail)
        return emit

    def flush(self) -> jax.Array | None:
        """The held-back frames of the clip's end (no later window to blend with)."""
        tail, self.tail = self.tail, None
        return None if tail is None or tail.shape[1] == 0 else tail

    @property
    def state_bytes(self) -> int:
        return _nbytes((self.hist, self.tail))
