"""Video files: uint8 frames (T, H, W, 3) → mp4 (H.264, libx264) and any video file → frames, through the ffmpeg
binary that imageio-ffmpeg ships.

:class:`VideoWriter` appends frames as they come (streaming) and writes a *fragmented* mp4, so the file on disk is
playable after every flushed fragment. The file is written under a temporary name unique to the run
(``.NAME.XXXXXXXX.partial.mp4`` beside it); when closed, ffmpeg's exit status is checked, the frames are counted back
from the file, and only then is it renamed to its final name. A write error (a full disk, a lost mount), a failed
encoder, a short file or an exception while writing removes the temporary and raises an
:class:`~sana_jax.errors.InputError` naming the file and ffmpeg's own words; the destination is never half-written.
An existing destination is refused unless ``overwrite=True`` (also when another run creates it while this one
writes). ``live=True`` tunes it for watching the file while it grows (streaming generation): one fragment per frame,
no encoder look-ahead.

**How ffmpeg is started.** Without a fork of this process: ``subprocess`` with ``process_group=0`` and no
``preexec_fn`` takes the vfork/exec path, so nothing of the multithreaded JAX process runs in the child and JAX's
fork warning ("os.fork() was called … will likely lead to a deadlock") is not raised. It came from imageio-ffmpeg's
``preexec_fn=os.setpgrp`` (a Python function to run in the child, which forces a real ``fork()`` and runs the
registered fork hooks); ``process_group=0`` puts ffmpeg in its own process group the same way, so Ctrl-C in the
terminal still does not reach it.

**Why not PyAV (FFmpeg in process).** Weighed and measured (2 shared CPU cores): it needs no child process and writes
a 9-frame 64×64 clip in ~10 ms instead of ~50 ms, but (1) its libx264 build, with the frame threads an encoder needs
to be fast, gave a different file on almost every run under load (81 frames of 480×832: 5-6 distinct files in 6
runs, where the ffmpeg binary gave 6 identical ones) — same seed, same bytes would be lost; (2) it drops the error of
closing its output (a full disk while the trailer is written went unnoticed); (3) it was ~10 % slower on 480×832
clips (the RGB→YUV conversion runs in the calling thread); (4) it is one more ~40 MB dependency.
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from sana_jax.errors import InputError
from sana_jax.io.files import check_output_file, publish, unique_temporary


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


def _spawn(args: list[str], **kw) -> subprocess.Popen:
    """Start the bundled ffmpeg without forking this process (see the module's docstring), in its own process
    group."""
    import imageio_ffmpeg

    return subprocess.Popen([imageio_ffmpeg.get_ffmpeg_exe(), *args], process_group=0, **kw)


def _first_error(log: bytes) -> str:
    """ffmpeg's first error line (the cause; what follows are its consequences), without its ``[muxer @ 0x…]``
    prefix."""
    lines = [re.sub(r"^\[[^]]*@ 0x[0-9a-f]+\]\s*", "", ln).strip() for ln in log.decode(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    return lines[0] if lines else "no message"


class VideoWriter:
    """``with VideoWriter("out.mp4", fps=16) as w: w.append(frames)`` — frames uint8 (T, H, W, 3) or (H, W, 3).

    Leaving the ``with`` block normally closes the file (publishes it); leaving it with an exception, Ctrl-C
    included, calls :meth:`abort` (nothing is published). ``live=True``: the partial file (:attr:`tmp`) can be
    watched while it grows, every appended frame but the newest readable (what ``StreamingPipeline.stream``
    writes). ``quality`` 1-10 as imageio's (8: CRF 10)."""

    def __init__(self, path: str | os.PathLike, fps: float = 16.0, quality: int = 8, *, live: bool = False,
                 overwrite: bool = False):
        self.path = check_output_file(path, None, overwrite=overwrite)
        if not (isinstance(fps, (int, float, Fraction)) and 0 < fps < float("inf")):
            raise InputError(f"fps must be a positive number, got {fps!r}")
        if not 1 <= quality <= 10:
            raise InputError(f"quality must be in [1, 10], got {quality!r}")
        self.fps, self.quality, self.live, self.overwrite = fps, quality, live, overwrite
        self.frames_written = 0
        self.size: tuple[int, int] | None = None
        self.tmp = unique_temporary(self.path, ".mp4")
        self._ffmpeg: subprocess.Popen | None = None
        self._log = None
        self._done = self.published = False

    def _open(self, height: int, width: int) -> None:
        # imageio-ffmpeg's command for these settings (the same encoder input, so the same bytes as before)
        crf = int((1 - self.quality / 10) * 51)
        args = ["-y", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{width}x{height}", "-pix_fmt", "rgb24",
                "-r", str(Fraction(self.fps).limit_denominator()), "-i", "-", "-an", "-vcodec", "libx264",
                "-pix_fmt", "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p",  # 4:2:0: even sides
                "-crf", str(crf), "-v", "error", *(_LIVE if self.live else _FRAGMENTS), "-f", "mp4", str(self.tmp)]
        self._log = tempfile.TemporaryFile()  # a file, not a pipe: ffmpeg never blocks on it
        self._ffmpeg = _spawn(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log)
        self.size = (height, width)

    def append(self, frames) -> None:
        if self._done:
            raise InputError(f"{self.path}: the writer is closed")
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InputError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        if self.size is not None and frames.shape[1:3] != self.size:
            raise InputError(f"frame size {frames.shape[1:3]} differs from the video's {self.size}")
        if not frames.shape[0]:
            return
        try:
            if self._ffmpeg is None:
                self._open(*frames.shape[1:3])
            self._ffmpeg.stdin.write(np.ascontiguousarray(frames).data)
            if self.live:
                self._ffmpeg.stdin.flush()
        except BaseException as e:
            self._fail(e)
        self.frames_written += frames.shape[0]

    def _ffmpeg_error(self) -> str | None:
        """None when ffmpeg ended well, else what it said (it is waited for)."""
        code = self._ffmpeg.wait()
        if code == 0:
            return None
        self._log.seek(0)
        return f"ffmpeg exited with status {code}: {_first_error(self._log.read())}"

    def _fail(self, e: BaseException):
        """Abort, then raise: write errors as an InputError naming the file, anything else (Ctrl-C) as it is."""
        reason = None
        if isinstance(e, OSError) and self._ffmpeg is not None:  # a broken pipe: ffmpeg ended, its log says why
            try:
                self._ffmpeg.stdin.close()
            except OSError:
                pass
            reason = self._ffmpeg_error() or str(e)
        self.abort()
        if reason is not None or isinstance(e, (OSError, InputError)):
            raise InputError(f"{self.path}: cannot write the video ({reason or e}); nothing was written") from e
        raise e

    def close(self) -> Path | None:
        """Finish the file, check ffmpeg's exit status, count the frames back from the file, and rename it to
        :attr:`path`; returns the path (None when no frame was appended: nothing is written). Raises an
        :class:`InputError` (and removes the temporary) when writing failed or the file lacks frames."""
        if self._done:
            return self.path if self.published else None
        if not self.frames_written:
            self.abort()
            return None
        try:
            try:
                self._ffmpeg.stdin.close()
            except OSError:
                pass  # a broken pipe: the exit status says why
            error = self._ffmpeg_error()
            if error is None:
                _sync(self.tmp)
                held = count_frames(self.tmp)
                if held != self.frames_written:
                    error = f"the file holds {held} of the {self.frames_written} frames written"
            if error is not None:
                raise InputError(f"{self.path}: cannot write the video ({error}); nothing was written")
            publish(self.tmp, self.path, overwrite=self.overwrite)
        except InputError:
            self.abort()  # (when publish refused, its temporary is gone already)
            raise
        except BaseException as e:
            self._fail(e)
        self._done = self.published = True
        self._log.close()
        return self.path

    def abort(self) -> None:
        """Stop writing and remove the temporary file; :attr:`path` is left as it was."""
        if self._done:
            return
        self._done = True
        if self._ffmpeg is not None:
            self._ffmpeg.kill()
            self._ffmpeg.wait()
            for stream in (self._ffmpeg.stdin, self._log):
                try:
                    stream.close()
                except OSError:
                    pass
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _sync(path: Path) -> None:
    """What ffmpeg wrote, on the disk before the rename makes it the output."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SavesVideo:
    """For pipeline outputs with ``frames`` (uint8 (B, T, H, W, 3) or None) and ``fps``: ``save(path, index)``."""

    def save(self, path: str | os.PathLike, index: int = 0, *, overwrite: bool = False) -> Path:
        if self.frames is None:
            raise InputError("this output was not decoded (decode=False); nothing to save as video")
        return write_video(self.frames[index], path, fps=self.fps, overwrite=overwrite)


@dataclasses.dataclass
class VideoOutput(SavesVideo):
    """What a pipeline returns: ``frames`` uint8 (B, T, H, W, 3) (None when not decoded), ``latents`` normalised
    (B, T', H', W', C), ``timings`` seconds per stage, ``fps`` for saving."""

    frames: np.ndarray | None
    latents: np.ndarray
    timings: dict[str, float]
    fps: int = 16


def write_video(frames, path: str | os.PathLike, fps: float = 16.0, *, overwrite: bool = False) -> Path:
    """Write a whole clip (uint8 (T, H, W, 3), T ≥ 1) to ``path`` atomically (see :class:`VideoWriter`)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or not frames.shape[0]:
        raise InputError(f"a clip to write must be uint8 (T, H, W, 3) with T ≥ 1, got {frames.dtype} {frames.shape}")
    with VideoWriter(path, fps=fps, overwrite=overwrite) as writer:
        writer.append(frames)
    return writer.path


_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf"}


def _boxes(f, start: int, end: int):
    """(type, payload offset, box end) of the ISO-BMFF boxes in [start, end); stops at a box that runs past
    ``end`` (a file cut short)."""
    while start + 8 <= end:
        f.seek(start)
        size, kind = struct.unpack(">I4s", f.read(8))
        header = 8
        if size == 1:
            (size,), header = struct.unpack(">Q", f.read(8)), 16
        elif size == 0:
            size = end - start
        if size < header or start + size > end:
            return
        yield kind, start + header, start + size
        start += size


def _samples(f, kind: bytes, start: int, end: int) -> int:
    """Samples a moof (its trun boxes) or a moov (its stsz boxes) describes."""
    count = 0
    for child, payload, child_end in _boxes(f, start, end):
        if child in _CONTAINERS:
            count += _samples(f, child, payload, child_end)
        elif child == b"trun" or child == b"stsz":
            f.seek(payload + (4 if child == b"trun" else 8))
            count += struct.unpack(">I", f.read(4))[0]
    return count


def count_frames(path: str | os.PathLike) -> int:
    """Frames of an mp4 with one video track (what :class:`VideoWriter` writes) whose data is complete in the file,
    read from its boxes without decoding: a fragment counts only when its ``mdat`` is whole, so a file cut short
    counts only what it holds."""
    path = Path(path)
    with path.open("rb") as f:
        fragments = pending = indexed = 0
        for kind, payload, end in _boxes(f, 0, path.stat().st_size):
            if kind == b"moov":
                indexed = _samples(f, kind, payload, end)  # 0 in a fragmented file (empty_moov)
            elif kind == b"moof":
                pending = _samples(f, kind, payload, end)
            elif kind == b"mdat":
                fragments, pending = fragments + pending, 0
    return fragments or indexed


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames of a video file (anything ffmpeg reads: mp4, webm, mov, avi, gif …) as uint8 (T, H, W, 3)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    # PPM frames: each carries its size, so nothing has to be parsed out of ffmpeg's log
    ffmpeg = _spawn(["-v", "error", "-i", str(path), "-f", "image2pipe", "-vcodec", "ppm", "-"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    data, log = ffmpeg.communicate()
    header = re.match(rb"P6\s(\d+)\s(\d+)\s255\s", data)
    if ffmpeg.returncode or header is None:
        raise ValueError(f"{path}: ffmpeg cannot read it as a video ({_first_error(log)})")
    width, height = int(header[1]), int(header[2])
    frame = header.end() + width * height * 3
    if len(data) % frame:
        raise ValueError(f"{path}: ffmpeg's frames are not all {width}×{height}")
    frames = np.frombuffer(data, np.uint8).reshape(-1, frame)[:, header.end():]
    return frames.reshape(-1, height, width, 3).copy()  # writable, without the headers
