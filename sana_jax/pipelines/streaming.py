"""``StreamingPipeline``: LongSANA-style streaming long video — chunk by chunk, constant memory, frames to an mp4 as
soon as each chunk is decoded (docs/streaming.md; LongSANA's sampler:
``NVlabs/Sana:diffusion/scheduler/longlive_flow_euler_sampler.py``).

Glue only. Per chunk of latent frames (:func:`~sana_jax.pipelines.stream_chunks.plan_chunks`: LongSANA's 10, the
remainder in the first):

1. the DiT's sampler for one chunk, :meth:`StreamingDiT.sample_chunk <sana_jax.models.sana_video_causal.StreamingDiT>`
   (fresh noise, 4 re-noising steps at t = [1000, 960, 889, 727] with CFG 1, then the clean t = 0 pass that commits
   the chunk to the causal DiT's constant-size state);
2. the VAE's streaming decoder (``vae.stream_decoder(**decode_options)``, :mod:`sana_jax.vae.stream_decode`);
3. frames (uint8, converted on device) appended to a live mp4 (``VideoWriter(path, live=True)``).

Step 1 is one executable per chunk shape (the state donated); the Wan decode two whatever the chunk size, the LTX-2
decode one per window length. So the first chunk (LongSANA: one frame longer, and the VAE's first-frame rules) and
the second compile, nothing after. Chunk c+1 is dispatched before chunk c's frames are pulled to the host and
encoded, so the device computes while the host writes.

    pipe = StreamingPipeline.from_pretrained("LongSANA_2B_480p_diffusers", dtype="bfloat16")
    result = pipe.stream("a cat surfing", seconds=60, out="cat.mp4", prompts_at={12: "a cat sleeping"})
    print(result.time_to_first_frame_s, result.fps)

Ctrl-C (``KeyboardInterrupt``) stops the stream, closes the mp4 (valid, with every frame written so far) and
``stream`` returns with ``interrupted=True``. Frames are never written half: SIGINT is deferred while a chunk is
being appended (:func:`sana_jax.io.interrupt.defer_sigint`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sana_jax.errors import InputError, NumericsError
from sana_jax.io.interrupt import defer_sigint
from sana_jax.io.video import VideoWriter, to_uint8
from sana_jax.models import sana_video_causal as sc
from sana_jax.parallel.multihost import to_host
from sana_jax.pipelines.components import PipelineFolder, as_mesh, default_size
from sana_jax.pipelines.stream_chunks import (ChunkTiming, StreamChunk, StreamRequest, StreamResult, check_stream,
                                              plan_chunks, stream_settings)  # plan_chunks: re-exported (__all__)
from sana_jax.progress import progress_bar
from sana_jax.sampling.schedules import Schedule
from sana_jax.validate import check_finite

Prompt = str | tuple[Any, Any]  # a text, or (embeddings (1, L, C), mask (1, L)) already encoded
WAN_SIZE = (480, 832)  # the released Wan2.1-1.3B students' resolution


def _stream_mesh(mesh):
    """``mesh`` (a Mesh or a spec string) for a stream: its DiT's weights per the logical-axis rules (heads / MLP
    over ``tensor``) and each chunk's latent frames over ``context`` when they divide. A stream is one sample
    without guidance, so ``data`` and ``fsdp`` have nothing to split: refused."""
    mesh = as_mesh(mesh)
    if mesh is None:
        return None
    idle = [f"{axis}={mesh.shape[axis]}" for axis in ("data", "fsdp") if mesh.shape.get(axis, 1) > 1]
    if idle:
        raise InputError(f"a stream has batch 1 and no guidance batch: {', '.join(idle)} would only repeat the work; "
                         "shard it over context and/or tensor")
    return mesh


class StreamingPipeline:
    """LongSANA streaming text-to-video. Build with :meth:`from_pretrained` or :meth:`from_pipeline`.

    ``encode_prompt(text) -> (embeddings (1, L, C), mask (1, L))`` turns prompts into caption features (from a
    ``SanaVideoPipeline``); without it, prompts must be given already encoded. ``encode_video(video (B, T, H, W, 3)
    in [-1, 1]) -> normalised latents`` (the pipeline's VAE encoder) is what ``image=``/``video=`` starts need.
    ``vae`` must have ``stream_decoder(**decode_options)`` (Wan, PatchVAE: no options; LTX-2: ``overlap`` latent
    frames cross-faded, default 1, and ``tile`` latent pixels). ``chunk_frames`` and ``schedule`` default to a
    folder's ``_sana_jax.stream`` settings (:func:`~sana_jax.pipelines.stream_chunks.stream_settings`: a distilled
    student's) or LongSANA's, and so does ``window``, the default of :meth:`stream`'s; ``size``: the default
    (height, width).
    """

    def __init__(self, transformer, vae, encode_prompt: Callable[[str], tuple[Any, Any]] | None = None, *,
                 fps: float = 16.0, schedule: Schedule | None = None, chunk_frames: int | None = None,
                 decode_options: Mapping[str, Any] | None = None, encode_video: Callable | None = None,
                 size: tuple[int, int] | None = None, window: int | None = None, mesh=None):
        self.transformer, self.vae, self.fps = transformer, vae, fps
        self.mesh = _stream_mesh(mesh)
        self.encode_prompt, self.encode_video = encode_prompt, encode_video
        longsana = stream_settings(None)
        self.schedule = schedule or longsana.schedule
        self.chunk_frames = longsana.chunk_frames if chunk_frames is None else chunk_frames
        self.window = window
        from sana_jax.models import wan_causal
        from sana_jax.models.wan import WanTransformer

        # the Wan students (CausVid, Self-Forcing): a KV cache, chunks counted from latent frame 0
        self.wan = isinstance(transformer, WanTransformer)
        self.size = size or (WAN_SIZE if self.wan else default_size(transformer.config.sample_size))
        sc.renoise_inputs(self.schedule)  # an InputError now for a schedule the sampler cannot run
        stream_decoder = getattr(vae, "stream_decoder", None)
        if stream_decoder is None:
            raise InputError(f"streaming needs a VAE with a streaming decoder (Wan, LTX-2, PatchVAE); "
                             f"{type(vae).__name__} has no stream_decoder")
        self.decoder = stream_decoder(**(decode_options or {}))
        self.dit = (wan_causal.StreamingDiT if self.wan else sc.StreamingDiT)(transformer, mesh=self.mesh)
        self._uint8_traces = 0

        def uint8(video):  # and whether every value was finite (one boolean more to bring back)
            self._uint8_traces += 1
            return to_uint8(video, jnp), jnp.isfinite(video).all()

        self._uint8 = jax.jit(uint8)

    def _chunk_frames(self, chunk_frames: int | None) -> int:
        return self.chunk_frames if chunk_frames is None else chunk_frames

    @property
    def traces(self) -> int:
        """Python traces of every jitted function of the stream (DiT, decoder, uint8): a test hook."""
        return self._uint8_traces + self.dit.traces + self.decoder.traces

    # -- construction ------------------------------------------------------------------------------------------------

    @classmethod
    def check(cls, folder: str | Path | PipelineFolder, *, seconds: float | None = None,
              num_chunks: int | None = None, chunk_frames: int | None = None, fps: float = 16.0,
              height: int | None = None,
              width: int | None = None, window: int | None = None,
              prompts_at: Mapping[int, Any] | None = None, dtype: str = "float32", vae_dtype: str = "float32",
              memory: bool = True, weights: str | None = None) -> StreamRequest:
        """Every check of a stream request that needs no weights, from the folder's configs: a VAE that streams,
        then :func:`~sana_jax.pipelines.stream_chunks.check_stream` (length, frame size against the VAE and the
        DiT's patch, window, prompt-switch chunks), then (``memory``) that a chunk fits in what the device has with
        the models in ``dtype``/``vae_dtype`` and ``weights`` (:func:`sana_jax.pipelines.memory.check_stream_memory`).
        Height/width left None take the checkpoint's resolution; the returned :class:`StreamRequest` has them filled
        in, and the chunk plan. ``chunk_frames`` None: the folder's
        (:func:`~sana_jax.pipelines.stream_chunks.stream_settings`)."""
        pf = folder if isinstance(folder, PipelineFolder) else PipelineFolder.open(folder)
        if chunk_frames is None:
            chunk_frames = stream_settings(pf.defaults().get("stream")).chunk_frames
        request = check_stream(cls._streaming_vae(pf), pf.patch_size(), pf.default_size(), seconds=seconds,
                               num_chunks=num_chunks, chunk_frames=chunk_frames, fps=fps, height=height, width=width,
                               window=window, prompts_at=prompts_at)
        if memory:
            from sana_jax.pipelines.memory import check_folder_stream

            check_folder_stream(pf, chunks=request.chunks, height=request.height, width=request.width, dtype=dtype,
                                vae_dtype=vae_dtype, weights=weights)
        return request

    @staticmethod
    def _streaming_vae(pf: PipelineFolder) -> tuple[int, int]:
        """(temporal, spatial) compression of the folder's VAE, from its config; an InputError unless the VAE class
        has a streaming decoder."""
        from converters.loader import BY_CLASS

        temporal, spatial, _ = pf.vae_spec()  # a ConfigError for a VAE class nothing here loads
        name = pf.class_name("vae")
        if not hasattr(getattr(BY_CLASS.get(name), "MODEL", None), "stream_decoder"):
            raise InputError(f"{pf.root}: streaming needs a VAE with a streaming decoder (Wan, LTX-2, PatchVAE); its "
                             f"VAE is {name}")
        return temporal, spatial

    @classmethod
    def from_pipeline(cls, pipe, *, motion_score: int | None = None, **kw) -> StreamingPipeline:
        """Reuse a loaded :class:`~sana_jax.pipelines.SanaVideoPipeline` (its transformer, VAE and text encoder)."""

        def encode(text: str):
            cond, _ = pipe.encode_prompt([text], None, motion_score=motion_score)
            return cond["text"], cond["mask"]

        settings = stream_settings(pipe.defaults.get("stream"))
        kw.setdefault("chunk_frames", settings.chunk_frames)
        kw.setdefault("schedule", settings.schedule)
        kw.setdefault("window", settings.window)
        return cls(pipe.transformer, pipe.vae, encode, fps=kw.pop("fps", None) or pipe.fps,
                   encode_video=pipe.encode_video, size=pipe.default_size(), **kw)

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, dtype: str = "float32", vae_dtype: str = "float32",
                        prompt_style: str = "diffusers", motion_score: int | None = None, progress: bool = False,
                        weights: str | None = None, **kw) -> StreamingPipeline:
        """Load a diffusers pipeline folder (LongSANA's, or any SANA-Video one: the causal model uses the same
        weights). Extra keywords go to the constructor (``schedule``, ``chunk_frames``, ``decode_options``,
        ``fps``); the folder's ``_sana_jax`` defaults (fps, size, stream settings) fill in the rest. ``weights``
        (``"fp8"`` / ``"int8"``): the DiT's and text encoder's Linear weights in 8 bits."""
        from sana_jax.pipelines.text_to_video import SanaVideoPipeline

        cls._streaming_vae(PipelineFolder.open(folder))  # before loading anything
        pipe = SanaVideoPipeline.from_pretrained(folder, dtype=dtype, vae_dtype=vae_dtype, prompt_style=prompt_style,
                                                 progress=progress, weights=weights)
        return cls.from_pipeline(pipe, motion_score=motion_score, **kw)

    @classmethod
    def from_wan(cls, base: str | Path, checkpoint: str | Path | None = None, *, dtype: str = "float32",
                 vae_dtype: str = "float32", schedule: Schedule | str | None = None, progress: bool = False,
                 weights: str | None = None, **kw) -> StreamingPipeline:
        """A Wan2.1 student: the DiT of ``checkpoint`` (CausVid's ``model.pt``, Self-Forcing's ``.pt``, a
        safetensors file or folder; None: ``base``'s own DiT run block-causally) with the UMT5 text encoder,
        tokenizer and VAE of ``base``, a Wan2.1 folder in the diffusers or the original layout
        (:class:`~sana_jax.pipelines.wan_components.WanFolder`). ``schedule``: a :class:`Schedule`, or
        ``"causvid"`` / ``"self-forcing"`` (default: the checkpoint's, :func:`~sana_jax.pipelines.wan_components.
        student_kind`; a ``sana-jax train distill`` student folder's own settings). Chunks of 3 latent frames,
        16 fps, 480×832 unless the keywords say otherwise. bf16 runs the DiT in bf16 throughout, time embedding and
        modulation included, as the students were trained. ``weights`` (``"fp8"`` / ``"int8"``): the DiT's and UMT5's
        Linear weights in 8 bits."""
        from sana_jax.pipelines import wan_components as wc
        from sana_jax.text.wan_prompt import encode_wan_prompts, prompt_encoder

        folder = wc.WanFolder.open(base)
        stored = PipelineFolder.open(folder.root).defaults().get("stream") if folder.layout == "diffusers" else None
        if stored is not None and checkpoint is None:  # a student made by `sana-jax train distill`
            settings = stream_settings(stored)
            kw.setdefault("chunk_frames", settings.chunk_frames)
            kw.setdefault("window", settings.window)
            schedule = schedule or settings.schedule
        if schedule is None or isinstance(schedule, str):
            schedule = wc.student_schedule(schedule or (wc.student_kind(checkpoint) if checkpoint else "causvid"))
        bar = progress_bar(progress, total=4, desc="loading Wan2.1", unit="part")
        transformer = folder.load_transformer(jnp.dtype(dtype), checkpoint, weights=weights)
        transformer.set_float32_conditioning(jnp.dtype(dtype) == jnp.float32)
        bar.update()
        text_encoder, tokenizer = folder.load_text_encoder(jnp.dtype(dtype), weights), folder.load_tokenizer()
        bar.update(2)
        vae = folder.load_vae(jnp.dtype(vae_dtype))
        bar.update()
        bar.close()
        encoder = prompt_encoder(text_encoder)
        vae_graph, vae_params = nnx.split(vae)
        encode = jax.jit(lambda params, video: nnx.merge(vae_graph, params).encode(video))
        kw.setdefault("chunk_frames", wc.STUDENT_CHUNK_FRAMES)
        return cls(transformer, vae, lambda text: (encode_wan_prompts([text], tokenizer, encoder), None),
                   fps=kw.pop("fps", None) or 16.0, schedule=schedule,
                   encode_video=lambda video: encode(vae_params, jnp.asarray(video, jnp.float32)), **kw)

    # -- pieces ------------------------------------------------------------------------------------------------------

    def default_size(self) -> tuple[int, int]:
        return self.size

    def check_inputs(self, *, seconds: float | None = None, num_chunks: int | None = None,
                     chunk_frames: int | None = None, height: int | None = None, width: int | None = None,
                     window: int | None = None, prompts_at: Mapping[int, Any] | None = None,
                     sink: int = 0) -> StreamRequest:
        """:meth:`check`'s request checks against the loaded models; what :meth:`iter_chunks` does first."""
        return check_stream(self.vae.compression, self.transformer.config.patch_size, self.default_size(),
                            seconds=seconds, num_chunks=num_chunks, chunk_frames=self._chunk_frames(chunk_frames),
                            fps=self.fps, height=height, width=width, window=window, prompts_at=prompts_at,
                            aligned=self.wan, sink=sink)

    def _latent_shape(self, latent_frames: int, height: int, width: int) -> tuple[int, ...]:
        spatial = self.vae.compression[1]
        return (1, latent_frames, height // spatial, width // spatial, self.transformer.config.in_channels)

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
        shapes (``StreamChunk.state_spec``): temp / argument / output / code bytes."""
        stats = self.dit.lower_chunk(state_spec, jax.random.key(0), 0, self.schedule,
                                     shape=self._latent_shape(latent_frames, height, width),
                                     max_frames=sc.DEFAULT_MAX_FRAMES).compile().memory_analysis()
        return {"temp_bytes": int(stats.temp_size_in_bytes), "argument_bytes": int(stats.argument_size_in_bytes),
                "output_bytes": int(stats.output_size_in_bytes),
                "generated_code_bytes": int(stats.generated_code_size_in_bytes)}

    def encode_context(self, frames, *, height: int, width: int) -> jax.Array:
        """Frames to start from — an image uint8 (H, W, 3) or a clip (T, H, W, 3), at the stream's size — as the
        normalised latents (1, T', h, w, C) that :meth:`stream` commits before generating. A clip must have a
        frame count the VAE encodes (Wan: 1 + 4k)."""
        from sana_jax.pipelines.components import check_video_size

        if self.encode_video is None:
            raise InputError("this StreamingPipeline has no VAE encoder (encode_video): it cannot start from frames")
        frames = np.asarray(frames)
        frames = frames[None] if frames.ndim == 3 else frames
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InputError(f"start frames must be uint8 (H, W, 3) or (T, H, W, 3), got {frames.dtype} "
                             f"{frames.shape}")
        if frames.shape[1:3] != (height, width):
            raise InputError(f"start frames are {frames.shape[2]}×{frames.shape[1]}, the stream {width}×{height}: "
                             "resize them first (the CLI does)")
        temporal, spatial = self.vae.compression
        check_video_size(height, width, frames.shape[0], temporal, spatial, self.transformer.config.patch_size)
        video = frames.astype(np.float32)[None] / 127.5 - 1.0
        return jnp.asarray(self.encode_video(video), self.transformer.dtype)

    def _commit_context(self, state, context, chunk_frames: int):
        """Commit the start latents chunk by chunk (the clean t = 0 pass, as generated chunks are committed) and
        run them through the streaming decoder, whose carried state then continues from them."""
        start = 0
        for n in sc.split_frames(context.shape[1], chunk_frames):
            _, state = self.dit(state, context[:, start:start + n], 0.0, commit=True)
            start += n
        self.decoder.push(context)  # the frames are the given ones; only the decoder's cache is kept
        return state

    # -- streaming ---------------------------------------------------------------------------------------------------

    def iter_chunks(self, prompt: Prompt, *, seconds: float | None = None, num_chunks: int | None = None,
                    chunk_frames: int | None = None, height: int | None = None, width: int | None = None, seed: int = 0,
                    prompts_at: Mapping[int, Prompt] | None = None, window: int | None = None,
                    profile: bool = False, image=None, video=None, sink: int = 0) -> Iterator[StreamChunk]:
        """Generate chunk by chunk, yielding each chunk's frames once they are on the host (chunk c+1 is already
        queued on the device). ``prompts_at[c]`` switches the prompt from chunk c on (read when chunk c starts, so
        the mapping may be filled while streaming; same text length ⇒ no recompilation). ``window``: attend to the
        last ``window`` chunks only (None: the pipeline's — a distilled student's folder sets it — else all);
        ``sink``: with a window, the first ``sink`` chunks stay attended for ever (an attention sink; the Wan
        students' KV cache only). ``profile``: wait for each stage to time it (no overlap).
        ``image``/``video``: start from these frames (:meth:`encode_context`; the chunks yielded are the new ones)."""
        start = time.perf_counter()
        window = self.window if window is None else window
        request = self.check_inputs(seconds=seconds, num_chunks=num_chunks, chunk_frames=chunk_frames, height=height,
                                    width=width, window=window, prompts_at=prompts_at, sink=sink)
        request, context = self._context(request, image, video)
        return self._chunks(request, prompt, seed=seed, prompts_at=prompts_at, window=window, profile=profile,
                            start=start, context=context, chunk_frames=self._chunk_frames(chunk_frames), sink=sink)

    def _context(self, request: StreamRequest, image, video) -> tuple[StreamRequest, jax.Array | None]:
        """(the request, the start latents or None). With a start the plan's leading latent frame — the one that
        holds a video's first frame alone — is the start's, so the first chunk is one latent frame shorter: an
        image start of ``seconds`` gives that many seconds in all."""
        if image is not None and video is not None:
            raise InputError("start from image= or video=, not both")
        frames = image if video is None else video
        if frames is None:
            return request, None
        context = self.encode_context(frames, height=request.height, width=request.width)
        chunks = (request.chunks[0] - 1, *request.chunks[1:]) if request.chunks[0] > 1 else request.chunks[1:]
        if not chunks:
            raise InputError("the stream is one latent frame long: with a start image or video nothing is left to "
                             "generate (ask for more seconds or chunks)")
        return dataclasses.replace(request, chunks=tuple(chunks)), context

    def _chunks(self, request: StreamRequest, prompt: Prompt, *, seed: int, prompts_at: Mapping[int, Prompt] | None,
                window: int | None, profile: bool, start: float, context=None,
                chunk_frames: int | None = None, sink: int = 0) -> Iterator[StreamChunk]:
        prompts_at = {} if prompts_at is None else prompts_at
        _, _, h, w, _ = self._latent_shape(1, request.height, request.width)
        given = 0 if context is None else context.shape[1]
        max_frames = sc.stream_max_frames(given + sum(request.chunks))
        key = jax.random.key(seed)

        text, mask = self._encode(prompts_at.get(0, prompt))
        state = self.dit.init_state(text, mask, height=h, width=w, window=window, frames=given + sum(request.chunks),
                                    chunk_frames=self._chunk_frames(chunk_frames), sink=sink)
        self.decoder.reset()
        if context is not None:
            state = self._commit_context(state, context, self._chunk_frames(chunk_frames))
        emitted = 0
        pending = None  # (timing, latents, (frames, finite) on device, state spec): chunk c waits for chunk c+1

        def finish(item, tail=None):
            nonlocal emitted
            timing, latents, (frames, finite), spec = item
            if not bool(finite):
                raise NumericsError(f"chunk {timing.index}: denoising and decoding produced NaN/Inf values: check the "
                                    "checkpoint's weights and the settings")
            host = np.asarray(frames)[0]
            if tail is not None:
                tail = np.asarray(tail)
                check_finite(tail, "the stream's last decoded frames")
                host = np.concatenate([host, to_uint8(tail)[0]])
            timing.ready_s = time.perf_counter() - start
            timing.frames, timing.first_frame = host.shape[0], emitted
            emitted += host.shape[0]
            return StreamChunk(timing.index, host, latents, timing, spec)

        for c, n in enumerate(request.chunks):
            if c > 0 and c in prompts_at:
                state = self.dit.set_prompt(state, *self._encode(prompts_at[c]))
            before = self.traces
            timing = ChunkTiming(c, n, 0, 0, time.perf_counter() - start)
            t0 = time.perf_counter()
            latents, state = self.dit.sample_chunk(state, key, c, self.schedule,
                                                   shape=self._latent_shape(n, request.height, request.width),
                                                   max_frames=max_frames)
            if profile:
                latents.block_until_ready()
                timing.dit_s = time.perf_counter() - t0
                t0 = time.perf_counter()
            if self.mesh is not None:  # the VAE decodes on one device (of each process)
                latents = jnp.asarray(to_host(latents))
            frames = self._uint8(self.decoder.push(latents))  # queued before chunk c+1: ready while it runs
            if profile:
                jax.block_until_ready(frames)
                timing.decode_s = time.perf_counter() - t0
            timing.traced = self.traces != before
            timing.state_bytes = state.nbytes + self.decoder.state_bytes
            if pending is not None:
                yield finish(pending)
            pending = (timing, latents, frames, jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state))
        tail = self.decoder.flush()  # converted on the host: no executable for this one-off shape
        yield finish(pending, tail)

    def stream(self, prompt: Prompt, *, seconds: float | None = None, num_chunks: int | None = None,
               chunk_frames: int | None = None, height: int | None = None, width: int | None = None, seed: int = 0,
               prompts_at: Mapping[int, Prompt] | None = None, window: int | None = None,
               out: str | Path | None = None, writer=None, overwrite: bool = False,
               progress: bool | Callable[[StreamChunk], None] = True, profile: bool = False, image=None,
               video=None, sink: int = 0) -> StreamResult:
        """Stream a video into ``out`` (an mp4 path, refused before anything runs if it exists and not
        ``overwrite``; written live under a temporary name unique to the run, renamed when the stream ends, removed
        if it fails: :class:`~sana_jax.io.video.VideoWriter`) or into ``writer`` (anything with
        ``append(uint8 (T, H, W, 3))``; left open for its owner), or nowhere.

        ``image`` (uint8 (H, W, 3)): start from it — its latent is committed as the first context and it is the
        video's first frame. ``video`` (uint8 (T, H, W, 3)): extend it — its latents are committed and the output
        holds its frames, then the new ones. Both at the stream's size (:meth:`encode_context`).

        ``progress``: True for a progress bar over chunks, or a callable given each :class:`StreamChunk` after it
        was written (raising ``KeyboardInterrupt`` there stops the stream like Ctrl-C). Returns per-chunk timings,
        time to first frame and FPS. On Ctrl-C the file is closed with every frame written so far and the result
        has ``interrupted=True``. Memory stays constant: nothing is kept per chunk but its timing.
        """
        start = time.perf_counter()
        window = self.window if window is None else window
        request = self.check_inputs(seconds=seconds, num_chunks=num_chunks, chunk_frames=chunk_frames, height=height,
                                    width=width, window=window, prompts_at=prompts_at, sink=sink)
        if out is not None and writer is not None:
            raise InputError("give out= or writer=, not both")
        request, context = self._context(request, image, video)
        given = None if context is None else np.asarray(image if video is None else video)
        given = None if given is None else (given[None] if given.ndim == 3 else given)
        own = None if out is None else VideoWriter(out, fps=self.fps, live=True, overwrite=overwrite)  # ours to close
        writer = writer if own is None else own
        callback = progress if callable(progress) else None
        bar = progress_bar(progress is True, total=len(request.chunks), desc="streaming", unit="chunk")
        timings: list[ChunkTiming] = []
        frames_written, setup_s, interrupted = 0, 0.0, False
        gen = self._chunks(request, prompt, seed=seed, prompts_at=prompts_at, window=window, profile=profile,
                           start=start, context=context, chunk_frames=self._chunk_frames(chunk_frames), sink=sink)
        try:
            if given is not None:
                if writer is not None:
                    with defer_sigint():
                        writer.append(given)
                frames_written += given.shape[0]
            for chunk in gen:
                if writer is not None:
                    with defer_sigint():
                        writer.append(chunk.frames)
                frames_written += chunk.frames.shape[0]
                chunk.timing.written_s = time.perf_counter() - start
                if not timings:
                    setup_s = chunk.timing.dispatched_s
                timings.append(chunk.timing)
                bar.update()
                bar.set_postfix(frames=frames_written, fps=f"{frames_written / chunk.timing.written_s:.1f}")
                if callback is not None:
                    callback(chunk)
                del chunk
        except KeyboardInterrupt:
            interrupted = True  # what was written is kept
        except BaseException:
            if own is not None:
                own.abort()  # a failed stream publishes nothing
            raise
        finally:
            gen.close()
            bar.close()
        path = None if own is None else own.close()  # None: no frame written
        total_s = time.perf_counter() - start
        return StreamResult(
            path=path, frames=frames_written,
            latent_frames=sum(request.chunks[:len(timings)]),
            chunks=timings, setup_s=setup_s, total_s=total_s,
            time_to_first_frame_s=timings[0].written_s if timings else None,
            state_bytes=timings[-1].state_bytes if timings else 0,
            interrupted=interrupted, video_fps=self.fps)



__all__ = ["ChunkTiming", "StreamChunk", "StreamRequest", "StreamResult", "StreamingPipeline", "plan_chunks"]
