"""A stream's plan and what it reports: :func:`stream_settings` (a folder's chunk size and schedule),
:func:`plan_chunks` (latent frames per chunk), :func:`check_stream` (a
request checked without weights: :class:`StreamRequest`), :class:`ChunkTiming` (one chunk's times),
:class:`StreamChunk` (what ``StreamingPipeline.iter_chunks`` yields) and :class:`StreamResult` (what
``StreamingPipeline.stream`` returns)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from sana_jax.errors import ConfigError, InputError
from sana_jax.models.sana_video_causal import split_frames
from sana_jax.pipelines.components import check_video_size
from sana_jax.sampling.schedules import LONGSANA_TIMESTEPS, Schedule, longsana_schedule
from sana_jax.validate import check_integer, check_number

#: LongSANA's latent frames per chunk (``SanaInferencePipeline.num_frame_per_block``).
LONGSANA_CHUNK_FRAMES = 10


class StreamSettings(NamedTuple):
    """How a checkpoint streams: latent frames per chunk, the per-chunk schedule, and the window (past chunks a
    chunk attends to; None: all)."""

    chunk_frames: int
    schedule: Schedule
    window: int | None


def stream_settings(stored: Mapping | None) -> StreamSettings:
    """The :class:`StreamSettings` of a pipeline folder's ``_sana_jax.stream`` entry (``{"chunk_frames": K,
    "timesteps": [...], "shift": s, "window": W}``, written by ``sana-jax train distill``: W is the most past its
    rollouts showed the student); LongSANA's (10 frames; t = 1000, 960, 889, 727 at shift 7; all the past) for a
    folder without one."""
    stored = dict(stored or {})
    unknown = set(stored) - {"chunk_frames", "timesteps", "shift", "window"}
    if unknown:
        raise ConfigError(f"unknown stream settings {sorted(unknown)} (known: chunk_frames, timesteps, shift, window)")
    chunk, window = stored.get("chunk_frames", LONGSANA_CHUNK_FRAMES), stored.get("window")
    if not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"stream chunk_frames must be an integer >= 1, got {chunk!r}")
    if window is not None and (not isinstance(window, int) or window < 1):
        raise ConfigError(f"stream window must be an integer >= 1 or null, got {window!r}")
    schedule = longsana_schedule(stored.get("timesteps", LONGSANA_TIMESTEPS), float(stored.get("shift", 7.0)))
    return StreamSettings(chunk, schedule, window)


#: the longest stream planned at once: 10⁷ latent frames (a month of video at 16 fps and 4× compression)
MAX_LATENT_FRAMES = 10**7


def plan_chunks(*, seconds: float | None = None, num_chunks: int | None = None, chunk_frames: int = 10,
                fps: float = 16.0, temporal_compression: int = 4, aligned: bool = False) -> tuple[int, ...]:
    """Latent frames per chunk. ``seconds``: ``round(seconds·fps)`` video frames rounded up to 1 + tc·k, split as
    LongSANA does (chunks of ``chunk_frames``, the remainder in the first: 60 s at 16 fps → 961 frames → 241 latent
    → (11, 10, …, 10)). ``num_chunks`` = K: K·chunk_frames + 1 latent frames → (chunk_frames + 1,
    chunk_frames, …), i.e. 1 + tc·K·chunk_frames video frames.

    ``aligned`` (the Wan students, trained on chunks counted from latent frame 0): every chunk has
    ``chunk_frames`` frames, the first included; ``seconds`` rounds the latent frames up to a multiple of it
    (CausVid: 7 chunks of 3 = 21 latent frames = 81 video frames), ``num_chunks`` = K gives K·chunk_frames."""
    if (seconds is None) == (num_chunks is None):
        raise InputError("give exactly one of seconds= or num_chunks=")
    check_integer("chunk_frames", chunk_frames, 1)
    check_number("fps", fps, 0, low_open=True)
    check_integer("temporal_compression", temporal_compression, 1)
    if num_chunks is not None:
        latent = check_integer("num_chunks", num_chunks, 1) * chunk_frames + (0 if aligned else 1)
    else:
        frames = max(round(check_number("seconds", seconds, 0, low_open=True) * fps), 1)
        latent = 1 + math.ceil((frames - 1) / temporal_compression)
        latent = -(-latent // chunk_frames) * chunk_frames if aligned else latent
    if latent > MAX_LATENT_FRAMES:  # the plan is a tuple of chunk sizes: bound it
        raise InputError(f"the stream would have {latent:,} latent frames; at most {MAX_LATENT_FRAMES:,} "
                         "(ask for fewer seconds or chunks)")
    return (chunk_frames,) * (latent // chunk_frames) if aligned else split_frames(latent, chunk_frames)


@dataclasses.dataclass(frozen=True)
class StreamRequest:
    """A checked stream request (``StreamingPipeline.check``): the frame size, the checkpoint's default filled in,
    and the chunk plan (latent frames per chunk, :func:`plan_chunks`)."""

    height: int
    width: int
    chunks: tuple[int, ...]


def check_stream(compression: Sequence[int], patch: Sequence[int], size: tuple[int, int], *,
                 seconds: float | None = None, num_chunks: int | None = None, chunk_frames: int = 10,
                 fps: float = 16.0, height: int | None = None, width: int | None = None, window: int | None = None,
                 prompts_at: Mapping[int, Any] | None = None, aligned: bool = False, sink: int = 0
                 ) -> StreamRequest:
    """Every check of a stream request, on what it needs: the VAE's (temporal, spatial) ``compression``, the DiT's
    ``patch`` and the default ``size`` (height, width). The length (exactly one of ``seconds`` / ``num_chunks``),
    the frame size (multiples of spatial·patch), ``window`` (None or >= 1 chunk), ``sink`` (chunks pinned in
    attention: with a window only) and the chunks of ``prompts_at`` (prompt switches: within the stream).
    ``aligned``: :func:`plan_chunks`'s."""
    temporal, spatial = compression
    chunks = plan_chunks(seconds=seconds, num_chunks=num_chunks, chunk_frames=chunk_frames, fps=fps,
                         temporal_compression=temporal, aligned=aligned)
    height = size[0] if height is None else check_integer("height", height, 1)
    width = size[1] if width is None else check_integer("width", width, 1)
    check_video_size(height, width, 1, temporal, spatial, tuple(patch))
    if window is not None:
        check_integer("window (chunks)", window, 1)
    if check_integer("sink (chunks)", sink, 0) and window is None:
        raise InputError("an attention sink (--sink) needs a window (--window): without one every chunk is kept")
    for chunk in prompts_at or {}:
        if not isinstance(chunk, (int, np.integer)) or not 0 <= chunk < len(chunks):
            raise InputError(f"prompt switch at chunk {chunk!r}: the stream has chunks 0..{len(chunks) - 1}")
    return StreamRequest(height, width, chunks)


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


__all__ = ["ChunkTiming", "StreamChunk", "StreamRequest", "StreamResult", "check_stream", "plan_chunks"]
