"""Writing video: uint8 frames (T, H, W, 3) → mp4 (H.264 through imageio-ffmpeg's bundled ffmpeg).

:class:`VideoWriter` appends frames as they come (streaming) and writes a *fragmented* mp4, so the file on disk
is playable after every flushed fragment, also if the process is interrupted. The file is written under a
temporary name and renamed to its final name when closed — on Ctrl-C too, so what was written is kept, complete
up to the last frame, under the name asked for. ``live=True`` tunes it for watching the file while it grows
(streaming generation): one fragment per frame, no encoder look-ahead.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from sana_jax.errors import InputError


def to_uint8(video, xp=np):
    """Float video in [-1, 1] (…, H, W, 3) → uint8 in [0, 255], rounding like diffusers' postprocessing (half to
    even). ``xp=jax.numpy`` converts on the device (inside a jitted function: 4× less to bring to the host)."""
    v = xp.asarray(video, dtype=xp.float32)
    return xp.clip(xp.round((v / 2 + 0.5) * 255.0), 0, 255).astype(xp.uint8)


# ffmpeg output options. Default: a fragment per keyframe, each self-contained (readable while open). Live: x264
# without look-ahead or B-frames (``-tune zerolatency``), packets flushed at once and a fragment per frame, so the
# partial file holds every appended frame but the newest (the muxer closes a fragment when the next frame arrives).
_FRAGMENTS = ["-movflags", "frag_keyframe+empty_moov+default_base_moof"]
_LIVE = ["-tune", "zerolatency", "-flush_packets", "1", "-movflags", "frag_every_frame+empty_moov+default_base_moof"]


class VideoWriter:
    """``with VideoWriter("out.mp4", fps=16) as w: w.append(frames)`` — frames uint8 (T, H, W, 3) or (H, W, 3).

    ``live=True``: the partial file (:attr:`tmp`) can be watched while it grows, every appended frame but the newest
    readable (what ``StreamingPipeline.stream`` writes)."""

    def __init__(self, path: str | os.PathLike, fps: float = 16.0, quality: int = 8, *, live: bool = False):
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise InputError(f"{self.path}: only .mp4 output is supported")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.partial.mp4")
        self.fps, self.quality, self.live = fps, quality, live
        self._writer = None
        self.frames_written = 0
        self.size: tuple[int, int] | None = None

    def _open(self, height: int, width: int):
        import imageio.v2 as imageio

        # macro_block_size=1 keeps odd sizes (yuv420p needs even ones)
        self._writer = imageio.get_writer(
            self.tmp, format="FFMPEG", mode="I", fps=self.fps, codec="libx264", quality=self.quality,
            macro_block_size=1, pixelformat="yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p",
            output_params=_LIVE if self.live else _FRAGMENTS)
        self.size = (height, width)

    def append(self, frames) -> None:
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InputError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        if self._writer is None:
            self._open(*frames.shape[1:3])
        elif frames.shape[1:3] != self.size:
            raise InputError(f"frame size {frames.shape[1:3]} differs from the video's {self.size}")
        for frame in frames:
            self._writer.append_data(frame)
            self.frames_written += 1

    def close(self) -> Path:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            os.replace(self.tmp, self.path)
        return self.path

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


class SavesVideo:
    """For pipeline outputs with ``frames`` (uint8 (B, T, H, W, 3) or None) and ``fps``: ``save(path, index)``."""

    def save(self, path: str | os.PathLike, index: int = 0) -> Path:
        if self.frames is None:
            raise InputError("this output was not decoded (decode=False); nothing to save as video")
        return write_video(self.frames[index], path, fps=self.fps)


@dataclasses.dataclass
class VideoOutput(SavesVideo):
    """What a pipeline returns: ``frames`` uint8 (B, T, H, W, 3) (None when not decoded), ``latents`` normalised
    (B, T', H', W', C), ``timings`` seconds per stage, ``fps`` for saving."""

    frames: np.ndarray | None
    latents: np.ndarray
    timings: dict[str, float]
    fps: int = 16


def write_video(frames, path: str | os.PathLike, fps: float = 16.0) -> Path:
    """Write a whole clip (uint8 (T, H, W, 3)) to ``path`` atomically."""
    with VideoWriter(path, fps=fps) as writer:
        writer.append(frames)
    return writer.path


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames of a video file as uint8 (T, H, W, 3)."""
    import imageio.v3 as iio

    return np.asarray(iio.imread(path, index=None))
