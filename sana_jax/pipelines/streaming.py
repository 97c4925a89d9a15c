"""``StreamingPipeline``: LongSANA-style streaming long video — chunk by chunk, constant memory, frames to an mp4 as
soon as each chunk is decoded.

Glue only (LongSANA's sampler: ``NVlabs/Sana:diffusion/scheduler/longlive_flow_euler_sampler.py``; docs/streaming.md).
Per chunk of latent frames (LongSANA: 10, the remainder in the first chunk):

1. fresh noise; 4 steps at t = [1000, 960, 889, 727] with CFG 1: ``x0 = x − σ_i·v``, then re-noised with *fresh*
   noise to σ_{i+1} (``x = (1 − σ_{i+1})·x0 + σ_{i+1}·ε``); the last step leaves ``x0``;
2. the clean t = 0 pass on ``x0`` commits the chunk to the causal DiT's constant-size state
   (:mod:`sana_jax.models.sana_video_causal`: linear-attention sums, conv tail, absolute RoPE frame offset);
3. streaming VAE decode — Wan: the causal-conv cache carried across chunks (exact: the frames equal decoding the
   whole latent at once); LTX-2 (non-causal decoder): overlapping temporal windows, each chunk's last
   ``ltx2_overlap`` latent frames held back and cross-faded with the next window;
4. frames (uint8, converted on device) appended to a live fragmented mp4 (:class:`LiveVideoWriter`).

Steps 1–2 are one jitted function per chunk shape (the 4 steps are a ``lax.scan``; the chunk index, timesteps
and sigmas are traced) and the state is donated; the Wan decode is two executables whatever the chunk size (the
clip's first latent frame, then one latent frame with the cache), the LTX-2 decode one per window length. So the
first chunk (LongSANA: one frame longer, and the VAE's first-frame rules) and the second compile, nothing after.
Chunk c+1 is dispatched before chunk c's frames are pulled to the host and encoded, so the device computes while
the host writes. Noise keys: ``fold_in(fold_in(key(seed), c), 0)`` for the initial
noise, ``…, i + 1)`` for step i's re-noising (the recipe of ``sana_video_causal``'s docstring).

    pipe = StreamingPipeline.from_pretrained("LongSANA_2B_480p_diffusers", dtype="bfloat16")
    result = pipe.stream("a cat surfing", seconds=60, out="cat.mp4", prompts_at={12: "a cat sleeping"})
    print(result.time_to_first_frame_s, result.fps)

Ctrl-C (``KeyboardInterrupt``) stops the stream, closes the mp4 (valid, with every frame written so far) and
``stream`` returns with ``interrupted=True``. Frames are never written half: SIGINT is deferred while a chunk is
being appended.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sana_jax.errors import InputError
from sana_jax.io.video import VideoWriter, to_uint8
from sana_jax.models import sana_video_causal as sc
from sana_jax.pipelines.components import check_video_size, default_size
from sana_jax.sampling.schedules import Schedule, longsana_schedule
from sana_jax.vae.ltx2 import LTX2VAE

Prompt = str | tuple[Any, Any]  # a text, or (embeddings (1, L, C), mask (1, L)) already encoded


# -- output ------------------------------------------------------------------------------------------------------------


class LiveVideoWriter(VideoWriter):
    """:class:`~sana_jax.io.video.VideoWriter` tuned for watching the file while it grows: x264 without look-ahead
    or B-frames (``-tune zerolatency``) and one mp4 fragment per frame, so the partial file (``.tmp``) holds every
    appended frame but the newest (the muxer closes a fragment when the next frame arrives). Renamed on close."""

    def _open(self, height: int, width: int):
        import imageio.v2 as imageio

        self._writer = imageio.get_writer(
            self.tmp, format="FFMPEG", mode="I", fps=self.fps, codec="libx264", quality=self.quality,
            macro_block_size=1, pixelformat="yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p",
            output_params=["-tune", "zerolatency", "-flush_packets", "1",
                           "-movflags", "frag_every_frame+empty_moov+default_base_moof"])
        self.size = (height, width)


@contextlib.contextmanager
def _defer_sigint():
    """Hold Ctrl-C while the block runs (a chunk's frames go to ffmpeg whole), then raise it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    try:
        previous = signal.signal(signal.SIGINT, lambda *_: received.append(True))
    except ValueError:  # no signal handling here (embedded interpreter)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _nbytes(tree) -> int:
    return sum(int(a.size) * a.dtype.itemsize for a in jax.tree.leaves(tree))


def _to_uint8(video: jax.Array) -> jax.Array:
    """On device: as :func:`sana_jax.io.video.to_uint8` (round half to even, clip), 4× less to transfer."""
    return jnp.clip(jnp.round((video.astype(jnp.float32) / 2 + 0.5) * 255.0), 0, 255).astype(jnp.uint8)


# -- streaming VAE decoders ----------------------------------------------------------------------------------------


class WanStreamDecoder:
    """Wan2.1 VAE decode one chunk at a time, exact: ``push(latents)`` returns the chunk's frames (the first push
    of a clip gives 1 + 4(T−1) frames, later ones 4T), carrying the causal-conv cache (``WanVAE.decode_stream``).

    Two executables serve every chunk size: the clip's first latent frame (no cache), and one latent frame with
    the cache (called per frame; the cache is donated)."""

    def __init__(self, vae):
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


class LTX2StreamDecoder:
    """LTX-2 VAE decode one chunk at a time with overlapping temporal windows (its decoder is not causal).

    A chunk of latents [a, a+n) is decoded together with the previous ``overlap + 1`` latent frames: the first
    one anchors the decoder's first-frame rule and its output frame is dropped (as ``LTX2VAE.decode``'s temporal
    chunks do), the next ``overlap`` re-decode the frames held back from the previous chunk, which are cross-faded
    with them by the same linear ramp (weights summing to 1). The last ``overlap`` latent frames' pixels are held
    back until the next push or :meth:`flush`. Memory: one window of ``n + overlap + 1`` latent frames. The decode
    compiles once per window length: the first chunk's (its own frames) and the later chunks' (``n + overlap + 1``;
    with LongSANA's first chunk one frame longer and ``overlap=0`` they are the same).
    """

    def __init__(self, vae: LTX2VAE, *, overlap: int = 1, timestep: float = 0.0, tile: int | None = None,
                 tile_overlap: int = 2):
        if overlap < 0:
            raise InputError(f"LTX-2 stream decode overlap must be >= 0 latent frames, got {overlap}")
        self.graphdef, self.params = nnx.split(vae)
        self.tc = vae.config.temporal_compression
        self.overlap = overlap
        self.traces = 0
        self.hist = self.tail = None
        hold = self.tc * overlap  # pixel frames held back
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


# -- results -----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ChunkTiming:
    """One chunk. Times are seconds since the stream started (prompt encoding included): ``dispatched_s`` when its
    DiT work was queued, ``ready_s`` when its frames reached the host, ``written_s`` when they were in the mp4.
    ``traced``: this chunk compiled something. ``state_bytes``: the DiT stream state plus the VAE's carried
    cache after this chunk (constant in the stream length). ``dit_s``/``decode_s``: only with ``profile=True``
    (each stage waited for; no overlap)."""

    index: int
    latent_frames: int
    frames: int
    first_frame: int
    dispatched_s: float
    ready_s: float = 0.0
    written_s: float = 0.0
    traced: bool = False
    state_bytes: int = 0
    dit_s: float | None = None
    decode_s: float | None = None

    @property
    def latency_s(self) -> float:
        return self.ready_s - self.dispatched_s


@dataclasses.dataclass
class StreamChunk:
    """What :meth:`StreamingPipeline.iter_chunks` yields: the chunk's uint8 frames (T, H, W, 3), its clean latents
    (device array (1, T', h, w, C), drop it to keep memory flat), its timing and the state's shapes."""

    index: int
    frames: np.ndarray
    latents: jax.Array
    timing: ChunkTiming
    state_spec: Any = None  # shapes/dtypes (jax.ShapeDtypeStruct) of the stream state after this chunk


@dataclasses.dataclass
class StreamResult:
    """``fps``: frames written / wall time since the call (prompt encoding and compilation included);
    ``steady_fps``: from the third chunk on (compiled; None with fewer chunks). ``state_bytes``: the DiT stream
    state plus the VAE's carried cache — constant in the stream length."""

    path: Path | None
    frames: int
    latent_frames: int
    chunks: list[ChunkTiming]
    setup_s: float
    total_s: float
    time_to_first_frame_s: float | None
    state_bytes: int
    interrupted: bool = False
    video_fps: float = 16.0

    @property
    def fps(self) -> float:
        return self.frames / self.total_s if self.total_s > 0 else 0.0

    @property
    def steady_fps(self) -> float | None:
        if len(self.chunks) < 3:
            return None
        frames = sum(c.frames for c in self.chunks[2:])
        return frames / (self.chunks[-1].written_s - self.chunks[1].written_s)

    def summary(self) -> dict:
        return {"frames": self.frames, "latent_frames": self.latent_frames, "chunks": len(self.chunks),
                "setup_s": self.setup_s, "total_s": self.total_s, "time_to_first_frame_s": self.time_to_first_frame_s,
                "fps": self.fps, "steady_fps": self.steady_fps, "state_bytes": self.state_bytes,
                "interrupted": self.interrupted,
                "per_chunk": [dict(dataclasses.asdict(c), latency_s=c.latency_s) for c in self.chunks]}


# -- the pipeline ------------------------------------------------------------------------------------------------------


def plan_chunks(*, seconds: float | None = None, num_chunks: int | None = None, chunk_frames: int = 10,
                fps: float = 16.0, temporal_compression: int = 4) -> tuple[int, ...]:
    """Latent frames per chunk. ``seconds``: ``round(seconds·fps)`` video frames rounded up to 1 + tc·k, split as
    LongSANA does (chunks of ``chunk_frames``, the remainder in the first: 60 s at 16 fps → 961 frames → 241 latent
    → (11, 10, …, 10)). ``num_chunks`` = K: K·chunk_frames + 1 latent frames → (chunk_frames + 1,
    chunk_frames, …), i.e. 1 + tc·K·chunk_frames video frames."""
    if (seconds is None) == (num_chunks is None):
        raise InputError("give exactly one of seconds= or num_chunks=")
    if not isinstance(chunk_frames, (int, np.integer)) or chunk_frames < 1:
        raise InputError(f"chunk_frames must be an integer >= 1, got {chunk_frames!r}")
    if num_chunks is not None:
        if not isinstance(num_chunks, (int, np.integer)) or num_chunks < 1:
            raise InputError(f"num_chunks must be an integer >= 1, got {num_chunks!r}")
        latent = num_chunks * chunk_frames + 1
    else:
        if not seconds > 0:
            raise InputError(f"seconds must be > 0, got {seconds!r}")
        frames = max(round(seconds * fps), 1)
        latent = 1 + math.ceil((frames - 1) / temporal_compression)
    return sc.chunk_sizes(latent, chunk_frames)


class StreamingPipeline:
    """LongSANA streaming text-to-video. Build with :meth:`from_pretrained` or :meth:`from_pipeline`.

    ``encode_prompt(text) -> (embeddings (1, L, C), mask (1, L))`` turns prompts into caption features (from a
    ``SanaVideoPipeline``); without it, prompts must be given already encoded.
    """

    def __init__(self, transformer, vae, encode_prompt: Callable[[str], tuple[Any, Any]] | None = None, *,
                 fps: float = 16.0, schedule: Schedule | None = None, ltx2_overlap: int = 1,
                 vae_tile: int | None = None):
        self.transformer, self.vae, self.fps = transformer, vae, fps
        self.encode_prompt = encode_prompt
        self.schedule = schedule or longsana_schedule()
        if self.schedule.solver != "renoise" or self.schedule.sigmas[-1] != 0:
            raise InputError("the streaming sampler needs a re-noising schedule ending at sigma 0 (longsana_schedule)")
        self.graphdef, self.params = nnx.split(transformer)
        self.traces = 0  # Python traces of the jitted functions (the decoder counts its own): a test hook
        if isinstance(vae, LTX2VAE):
            self.decoder = LTX2StreamDecoder(vae, overlap=ltx2_overlap, tile=vae_tile)
            self.temporal_compression, self.spatial_compression = (vae.config.temporal_compression,
                                                                   vae.config.spatial_compression)
        else:
            if not hasattr(vae, "decode_stream"):
                raise InputError("streaming needs the Wan or LTX-2 VAE (a streaming decoder); got "
                                 f"{type(vae).__name__}")
            if vae_tile is not None:
                raise InputError("vae_tile is only supported with the LTX-2 VAE when streaming")
            self.decoder = WanStreamDecoder(vae)
            self.temporal_compression, self.spatial_compression = (vae.config.temporal_compression,
                                                                   vae.config.spatial_compression)
        graphdef = self.graphdef

        def chunk(params, state, key, index, timesteps, sigmas, *, shape, max_frames):
            self.traces += 1
            model = nnx.merge(graphdef, params)
            b = shape[0]
            ckey = jax.random.fold_in(key, index)
            x = jax.random.normal(jax.random.fold_in(ckey, 0), shape, jnp.float32)

            def denoise(x, i):
                t = jnp.broadcast_to(timesteps[i], (b,))
                v, _ = sc.step(model, state, x.astype(model.dtype), t, max_frames=max_frames)
                x0 = x - sigmas[i] * v.astype(jnp.float32)
                eps = jax.random.normal(jax.random.fold_in(ckey, i + 1), shape, jnp.float32)
                return (1 - sigmas[i + 1]) * x0 + sigmas[i + 1] * eps, None  # σ_n = 0: the last step gives x0

            x, _ = jax.lax.scan(denoise, x, jnp.arange(timesteps.shape[0]))
            _, state = sc.step(model, state, x.astype(model.dtype), jnp.zeros((b,), jnp.float32), commit=True,
                               max_frames=max_frames)
            return x, state

        def init(params, text, mask, *, height, width, window):
            self.traces += 1
            return sc.init_state(nnx.merge(graphdef, params), text, mask, height=height, width=width, window=window)

        def set_prompt(params, state, text, mask):
            self.traces += 1
            return sc.set_prompt(nnx.merge(graphdef, params), state, text, mask)

        self._chunk = jax.jit(chunk, static_argnames=("shape", "max_frames"), donate_argnums=(1,))
        self._init = jax.jit(init, static_argnames=("height", "width", "window"))
        self._set_prompt = jax.jit(set_prompt, donate_argnums=(1,))

        def uint8(video):
            self.traces += 1
            return _to_uint8(video)

        self._uint8 = jax.jit(uint8)

    # -- construction ------------------------------------------------------------------------------------------------

    @classmethod
    def from_pipeline(cls, pipe, *, motion_score: int | None = None, **kw) -> StreamingPipeline:
        """Reuse a loaded :class:`~sana_jax.pipelines.SanaVideoPipeline` (its transformer, VAE and text encoder)."""

        def encode(text: str):
            cond, _ = pipe.encode_prompt([text], None, motion_score=motion_score)
            return cond["text"], cond["mask"]

        return cls(pipe.transformer, pipe.vae, encode, fps=kw.pop("fps", pipe.fps), **kw)

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, dtype: str = "float32", vae_dtype: str = "float32",
                        prompt_style: str = "diffusers", motion_score: int | None = None, progress: bool = False,
                        **kw) -> StreamingPipeline:
        """Load a diffusers pipeline folder (LongSANA's, or any SANA-Video one: the causal model uses the same
        weights). Extra keywords go to the constructor (``schedule``, ``ltx2_overlap``, ``vae_tile``, ``fps``)."""
        from sana_jax.pipelines.text_to_video import SanaVideoPipeline

        pipe = SanaVideoPipeline.from_pretrained(folder, dtype=dtype, vae_dtype=vae_dtype, prompt_style=prompt_style,
                                                 progress=progress)
        return cls.from_pipeline(pipe, motion_score=motion_score, **kw)

    # -- pieces ------------------------------------------------------------------------------------------------------

    def default_size(self) -> tuple[int, int]:
        return default_size(self.transformer.config.sample_size)

    def plan(self, *, seconds: float | None = None, num_chunks: int | None = None,
             chunk_frames: int = 10) -> tuple[int, ...]:
        """Latent frames per chunk (see :func:`plan_chunks`)."""
        return plan_chunks(seconds=seconds, num_chunks=num_chunks, chunk_frames=chunk_frames, fps=self.fps,
                           temporal_compression=self.temporal_compression)

    def _encode(self, prompt: Prompt):
        if isinstance(prompt, str):
            if self.encode_prompt is None:
                raise InputError("this StreamingPipeline has no text encoder: pass prompts as (embeddings, mask)")
            text, mask = self.encode_prompt(prompt)
        else:
            text, mask = prompt
        text = jnp.asarray(text, self.transformer.dtype)
        if text.ndim == 2:
            text = text[None]
        mask = jnp.ones(text.shape[:2], jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
        if text.shape[0] != 1 or mask.shape != text.shape[:2]:
            raise InputError(f"a streamed prompt must encode to (1, L, C) with a (1, L) mask, got {text.shape}, "
                             f"{mask.shape}")
        return text, mask

    def chunk_step_memory(self, state_spec, *, latent_frames: int, height: int, width: int) -> dict[str, int]:
        """XLA's memory plan of the compiled chunk step (4 denoising passes + the commit) for a state of these
        shapes (``StreamChunk.state_spec``): temp / argument / output / code bytes. Reuses the stream's executable
        when the shapes match."""
        h, w = height // self.spatial_compression, width // self.spatial_compression
        shape = (1, latent_frames, h, w, self.transformer.config.in_channels)
        stats = self._chunk.lower(self.params, state_spec, jax.random.key(0), jnp.int32(0),
                                  jnp.asarray(self.schedule.timesteps), jnp.asarray(self.schedule.sigmas),
                                  shape=shape, max_frames=sc.DEFAULT_MAX_FRAMES).compile().memory_analysis()
        return {"temp_bytes": int(stats.temp_size_in_bytes), "argument_bytes": int(stats.argument_size_in_bytes),
                "output_bytes": int(stats.output_size_in_bytes),
                "generated_code_bytes": int(stats.generated_code_size_in_bytes)}

    # -- streaming ---------------------------------------------------------------------------------------------------

    def iter_chunks(self, prompt: Prompt, *, seconds: float | None = None, num_chunks: int | None = None,
                    chunk_frames: int = 10, height: int | None = None, width: int | None = None, seed: int = 0,
                    prompts_at: Mapping[int, Prompt] | None = None, window: int | None = None,
                    profile: bool = False, _clock: list | None = None) -> Iterator[StreamChunk]:
        """Generate chunk by chunk, yielding each chunk's frames once they are on the host (chunk c+1 is already
        queued on the device). ``prompts_at[c]`` switches the prompt from chunk c on (read when chunk c starts, so
        the mapping may be filled while streaming; same text length ⇒ no recompilation). ``window``: attend to the
        last ``window`` chunks only (None: all). ``profile``: wait for each stage to time it (no overlap)."""
        start = time.perf_counter() if _clock is None else _clock[0]
        sizes = self.plan(seconds=seconds, num_chunks=num_chunks, chunk_frames=chunk_frames)
        default_h, default_w = self.default_size()
        height, width = height or default_h, width or default_w
        check_video_size(height, width, 1, self.temporal_compression, self.spatial_compression,
                         self.transformer.config.patch_size)
        if window is not None and (not isinstance(window, (int, np.integer)) or window < 1):
            raise InputError(f"window must be an integer >= 1 (chunks) or None, got {window!r}")
        prompts_at = {} if prompts_at is None else prompts_at
        h, w = height // self.spatial_compression, width // self.spatial_compression
        channels = self.transformer.config.in_channels
        total = sum(sizes)
        max_frames = max(sc.DEFAULT_MAX_FRAMES, -(-total // sc.DEFAULT_MAX_FRAMES) * sc.DEFAULT_MAX_FRAMES)
        timesteps = jnp.asarray(self.schedule.timesteps)
        sigmas = jnp.asarray(self.schedule.sigmas)
        key = jax.random.key(seed)

        text, mask = self._encode(prompts_at.get(0, prompt))
        state = self._init(self.params, text, mask, height=h, width=w, window=window)
        self.decoder.reset()
        emitted = 0
        pending = None  # (timing, latents, frames on device): chunk c waits while chunk c+1 computes

        def finish(item, tail=None):
            nonlocal emitted
            timing, latents, frames, spec = item
            host = np.asarray(frames)[0]
            if tail is not None:
                host = np.concatenate([host, tail[0]])
            timing.ready_s = time.perf_counter() - start
            timing.frames, timing.first_frame = host.shape[0], emitted
            emitted += host.shape[0]
            return StreamChunk(timing.index, host, latents, timing, spec)

        for c, n in enumerate(sizes):
            if c > 0 and c in prompts_at:
                state = self._set_prompt(self.params, state, *self._encode(prompts_at[c]))
            before = self.traces + self.decoder.traces
            timing = ChunkTiming(c, n, 0, 0, time.perf_counter() - start)
            t0 = time.perf_counter()
            latents, state = self._chunk(self.params, state, key, jnp.int32(c), timesteps, sigmas,
                                         shape=(1, n, h, w, channels), max_frames=max_frames)
            if profile:
                latents.block_until_ready()
                timing.dit_s = time.perf_counter() - t0
                t0 = time.perf_counter()
            frames = self._uint8(self.decoder.push(latents))  # queued before chunk c+1: ready while it runs
            if profile:
                frames.block_until_ready()
                timing.decode_s = time.perf_counter() - t0
            timing.traced = self.traces + self.decoder.traces != before
            timing.state_bytes = _nbytes(state) + self.decoder.state_bytes
            if pending is not None:
                yield finish(pending)
            pending = (timing, latents, frames, jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state))
        tail = self.decoder.flush()  # converted on the host: no executable for this one-off shape
        yield finish(pending, None if tail is None else to_uint8(np.asarray(tail)))

    def stream(self, prompt: Prompt, *, seconds: float | None = None, num_chunks: int | None = None,
               chunk_frames: int = 10, height: int | None = None, width: int | None = None, seed: int = 0,
               prompts_at: Mapping[int, Prompt] | None = None, window: int | None = None,
               out: str | Path | None = None, writer=None,
               progress: bool | Callable[[StreamChunk], None] = True, profile: bool = False) -> StreamResult:
        """Stream a video into ``out`` (an mp4 path, written live under a temporary name and renamed when closed) or
        into ``writer`` (anything with ``append(uint8 (T, H, W, 3))``; left open for its owner), or nowhere.

        ``progress``: True for a progress bar over chunks, or a callable given each :class:`StreamChunk` after it
        was written (raising ``KeyboardInterrupt`` there stops the stream like Ctrl-C). Returns per-chunk timings,
        time to first frame and FPS. On Ctrl-C the file is closed with every frame written so far and the result
        has ``interrupted=True``. Memory stays constant: nothing is kept per chunk but its timing.
        """
        clock = [time.perf_counter()]
        sizes = self.plan(seconds=seconds, num_chunks=num_chunks, chunk_frames=chunk_frames)
        own = None
        if out is not None:
            if writer is not None:
                raise InputError("give out= or writer=, not both")
            own = writer = LiveVideoWriter(out, fps=self.fps)
        callback = progress if callable(progress) else None
        bar = None
        if progress is True:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(sizes), desc="streaming", unit="chunk", leave=False)
        timings: list[ChunkTiming] = []
        frames_written, setup_s, interrupted = 0, 0.0, False
        gen = self.iter_chunks(prompt, seconds=seconds, num_chunks=num_chunks, chunk_frames=chunk_frames,
                               height=height, width=width, seed=seed, prompts_at=prompts_at, window=window,
                               profile=profile, _clock=clock)
        try:
            for chunk in gen:
                if writer is not None:
                    with _defer_sigint():
                        writer.append(chunk.frames)
                frames_written += chunk.frames.shape[0]
                chunk.timing.written_s = time.perf_counter() - clock[0]
                if not timings:
                    setup_s = chunk.timing.dispatched_s
                timings.append(chunk.timing)
                if bar is not None:
                    bar.update()
                    bar.set_postfix(frames=frames_written, fps=f"{frames_written / chunk.timing.written_s:.1f}")
                if callback is not None:
                    callback(chunk)
                del chunk
        except KeyboardInterrupt:
            interrupted = True
        finally:
            gen.close()
            if bar is not None:
                bar.close()
            if own is not None:
                own.close()
        total_s = time.perf_counter() - clock[0]
        return StreamResult(
            path=None if own is None else own.path, frames=frames_written, latent_frames=sum(sizes[:len(timings)]),
            chunks=timings, setup_s=setup_s, total_s=total_s,
            time_to_first_frame_s=timings[0].written_s if timings else None,
            state_bytes=timings[-1].state_bytes if timings else 0,
            interrupted=interrupted, video_fps=self.fps)


__all__ = ["ChunkTiming", "LTX2StreamDecoder", "LiveVideoWriter", "StreamChunk", "StreamResult", "StreamingPipeline",
           "WanStreamDecoder", "plan_chunks"]
