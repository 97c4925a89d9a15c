"""Training data: a folder of captioned videos, and the latent/text cache the trainer reads (``sana-jax cache``).

A video folder holds ``*.mp4`` (or ``.webm``/``.mov``/``.avi``/``.gif``) files, each captioned by a ``<stem>.txt``
beside it or by an entry of a ``captions.json`` (``{"file name": "caption"}``) in the folder.

A cache folder holds, as ``.npy`` files (read memory-mapped, so a cache larger than memory is fine):

* ``latents.npy`` (N, T', H', W', C) float32 — the VAE's *normalised* posterior means, channels-last;
* ``text.npy`` (U, L, D), ``mask.npy`` (U, L) — the text encoder's output for each of the U distinct captions,
  encoded exactly as the pipeline encodes prompts at inference; ``caption_index.npy`` (N,) maps samples to them;
* ``null_text.npy`` (1, L, D), ``null_mask.npy`` (1, L) — the empty prompt (the unconditional branch);
* ``cache.json`` — captions, shapes and where the cache came from.

It is written into a temporary folder that is renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from sana_jax.config import read_json
from sana_jax.errors import CheckpointError, InputError
from sana_jax.io.files import atomic_directory
from sana_jax.progress import progress_bar

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".avi", ".gif", ".mkv")
CACHE_FILES = ("latents", "text", "mask", "caption_index", "null_text", "null_mask")


class LatentDataset:
    """Cached latents and caption embeddings; :meth:`batch` gives the batch of a training step."""

    def __init__(self, latents, text, mask, caption_index, null_text, null_mask, *, captions: Sequence[str] = (),
                 meta: dict | None = None):
        n = len(latents)
        if len(caption_index) != n:
            raise InputError(f"{len(caption_index)} caption indices for {n} latents")
        if text.shape[:2] != mask.shape or null_text.shape[1:] != text.shape[1:]:
            raise InputError(f"text {text.shape}, mask {mask.shape} and null_text {null_text.shape} do not agree")
        if n and (int(np.max(caption_index)) >= len(text) or int(np.min(caption_index)) < 0):
            raise InputError(f"caption_index refers to captions outside [0, {len(text)})")
        self.latents, self.text, self.mask, self.caption_index = latents, text, mask, caption_index
        self.null_text, self.null_mask = null_text, null_mask
        self.captions, self.meta = list(captions), dict(meta or {})

    @property
    def size(self) -> int:
        return len(self.latents)

    # -- files -------------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "LatentDataset":
        folder = Path(folder)
        if not (folder / "cache.json").is_file():
            raise InputError(f"{folder}: not a latent cache (no cache.json; make one with `sana-jax cache`)")
        meta = read_json(folder / "cache.json", error=CheckpointError)
        try:
            arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in CACHE_FILES}
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{folder}: unreadable cache ({e})") from e
        return cls(**arrays, captions=meta.get("captions", ()), meta=meta)

    def save(self, folder: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the cache atomically (temporary folder, then rename)."""
        folder = Path(folder).absolute()
        with atomic_directory(folder, overwrite=overwrite, error=InputError) as tmp:
            for name in CACHE_FILES:
                np.save(tmp / f"{name}.npy", np.asarray(getattr(self, name)))
            meta = {**self.meta, "captions": self.captions, "size": self.size,
                    "latent_shape": list(np.shape(self.latents)[1:]), "text_shape": list(np.shape(self.text)[1:])}
            (tmp / "cache.json").write_text(json.dumps(meta, indent=2))
        return folder

    def signature(self) -> dict:
        """Sizes and a content hash of the captions and of the first latent, for the run's resume check."""
        digest = hashlib.sha256(json.dumps(self.captions).encode())
        if self.size:
            digest.update(np.ascontiguousarray(self.latents[0]).tobytes())
        return {"size": self.size, "latent_shape": list(np.shape(self.latents)[1:]),
                "text_shape": list(np.shape(self.text)[1:]), "digest": digest.hexdigest()[:16]}

    # -- batches -----------------------------------------------------------------------------------------------

    def indices(self, step: int, batch_size: int, seed: int = 0) -> np.ndarray:
        """Sample indices of step ``step``: epochs are fresh permutations drawn from ``(seed, epoch)``, so the
        batch of a step never depends on what ran before (exact resume)."""
        start = step * batch_size
        out = []
        while len(out) < batch_size:
            epoch, offset = divmod(start + len(out), self.size)
            perm = np.random.default_rng([seed, epoch]).permutation(self.size)
            out.extend(perm[offset:offset + batch_size - len(out)].tolist())
        return np.asarray(out)

    def batch(self, step: int, batch_size: int, seed: int = 0) -> dict:
        idx = self.indices(step, batch_size, seed)
        order = np.argsort(idx)  # memory-mapped reads in file order
        gathered = np.empty((batch_size, *self.latents.shape[1:]), np.float32)
        gathered[order] = np.asarray(self.latents[np.sort(idx)], np.float32)
        caption = np.asarray(self.caption_index)[idx]
        return {"latents": gathered, "text": np.asarray(self.text[caption], np.float32),
                "mask": np.asarray(self.mask[caption], np.int32),
                "null_text": np.asarray(self.null_text, np.float32), "null_mask": np.asarray(self.null_mask, np.int32)}


# -- building a cache --------------------------------------------------------------------------------------------

def captioned_videos(folder: str | os.PathLike) -> list[tuple[Path, str]]:
    """``(video path, caption)`` for every video in ``folder``, sorted by name; a missing caption is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder of videos")
    table = read_json(folder / "captions.json", error=InputError, missing={})
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise InputError(f"{folder}: no videos ({', '.join(VIDEO_SUFFIXES)})")
    out = []
    for path in videos:
        txt = path.with_suffix(".txt")
        caption = txt.read_text().strip() if txt.is_file() else table.get(path.name)
        if not caption:
            raise InputError(f"{path}: no caption (write {txt.name} beside it or an entry in captions.json)")
        out.append((path, caption))
    return out


def fit_frames(frames: np.ndarray, num_frames: int, height: int, width: int, where: str) -> np.ndarray:
    """uint8 (T, H, W, 3) → the first ``num_frames`` frames, centre-cropped to the aspect and resized (Lanczos)."""
    from PIL import Image

    if len(frames) < num_frames:
        raise InputError(f"{where}: has {len(frames)} frames, {num_frames} are needed")
    frames = frames[:num_frames]
    h, w = frames.shape[1:3]
    scale = max(height / h, width / w)
    ch, cw = round(height / scale), round(width / scale)
    top, left = (h - ch) // 2, (w - cw) // 2
    out = [np.asarray(Image.fromarray(f[top:top + ch, left:left + cw]).resize((width, height), Image.LANCZOS))
           for f in frames]
    return np.stack(out)


def spread_devices(mesh=None) -> list:
    """The devices :func:`batches_over_devices` spreads work over: ``mesh``'s (over every process), else the first
    device of each process (one device in a one-process run)."""
    if mesh is not None:
        return list(mesh.devices.flat)
    first = {}
    for device in sorted(jax.devices(), key=lambda d: d.id):
        first.setdefault(device.process_index, device)
    return [first[p] for p in sorted(first)]


def batches_over_devices(count: int, batch_size: int, compute: Callable[[int, int], object],
                         devices: Sequence | None = None) -> np.ndarray:
    """``compute(start, stop)`` (``stop − start`` rows) for every batch ``[start, start + batch_size)`` of ``count``
    items, concatenated as one NumPy array. Batch k runs on ``devices[k mod D]`` (default: one per process,
    :func:`spread_devices`) — by the process that owns that device, as that device's default — and in a
    multi-process run the rows are then gathered on every process (``multihost_utils.process_allgather``; every
    process must call this). Each batch is the one a single device computes, so are its numbers. ``compute`` runs
    no collectives; it may return a JAX array (the batches of a process's devices are dispatched before any is
    read back)."""
    from sana_jax.parallel import multihost

    starts = list(range(0, count, batch_size))
    if not starts:
        raise InputError("nothing to compute (no items)")
    devices = spread_devices() if devices is None else list(devices)
    me = jax.process_index()
    mine = [k for k in range(len(starts)) if devices[k % len(devices)].process_index == me]
    results: dict[int, np.ndarray] = {}
    local = max(1, sum(d.process_index == me for d in devices))
    for first in range(0, len(mine), local):  # one batch per local device at a time, read back together
        pending = {}
        for k in mine[first:first + local]:
            with jax.default_device(devices[k % len(devices)]):
                pending[k] = compute(starts[k], min(starts[k] + batch_size, count))
        results.update({k: np.asarray(v) for k, v in pending.items()})
    if not multihost.is_initialized() or jax.process_count() == 1:
        return np.concatenate([results[k] for k in range(len(starts))])
    from jax.experimental import multihost_utils

    # every process sends the same shape: its rows, padded to the most any process holds
    owner = [devices[k % len(devices)].process_index for k in range(len(starts))]
    rows = max(sum(min(batch_size, count - starts[k]) for k in range(len(starts)) if owner[k] == p)
               for p in set(owner) | {me})
    if set(range(jax.process_count())) <= set(owner):
        like = results[mine[0]]
    else:  # a process without a batch learns the rows' shape and dtype from batch 0's owner
        like = _row_layout(results.get(0), me == owner[0])
    packed, offset = np.zeros((rows, *like.shape[1:]), like.dtype), 0
    for k in mine:
        packed[offset:offset + len(results[k])] = results[k]
        offset += len(results[k])
    gathered = np.asarray(multihost_utils.process_allgather(packed))  # (processes, rows, ...)
    out, offsets = np.empty((count, *like.shape[1:]), like.dtype), {}
    for k, a in enumerate(starts):
        b, at = min(a + batch_size, count), offsets.get(owner[k], 0)
        out[a:b] = gathered[owner[k], at:at + b - a]
        offsets[owner[k]] = at + b - a
    return out


def _row_layout(example: np.ndarray | None, source: bool) -> np.ndarray:
    """A zero-row array with the row shape and dtype of ``example`` (given on the one process where ``source``),
    on every process (``multihost_utils.broadcast_one_to_all``; every process must call this)."""
    from jax.experimental import multihost_utils

    spec = np.zeros(16, np.int32)  # [row rank, row dims (≤ 7) …, the dtype's 8 characters]
    if source:
        if example.ndim > 8:
            raise InputError(f"rows of rank {example.ndim - 1} are more than the 7 this gathers")
        spec[0], spec[1:example.ndim] = example.ndim - 1, example.shape[1:]
        spec[8:] = np.frombuffer(example.dtype.str.encode().ljust(8), np.uint8)
    spec = np.asarray(multihost_utils.broadcast_one_to_all(spec, is_source=source))
    dtype = np.dtype(bytes(spec[8:].astype(np.uint8)).decode().strip())
    return np.zeros((0, *spec[1:1 + spec[0]]), dtype)


def build_cache(pipeline, clips: Iterable[tuple[np.ndarray, str]], *, batch_size: int = 4,
                meta: dict | None = None, progress: bool = False, mesh=None) -> LatentDataset:
    """Encode ``(uint8 frames (T, H, W, 3), caption)`` clips with the pipeline's VAE and text encoder.

    ``pipeline`` provides ``encode_video(float frames (B, T, H, W, 3) in [-1, 1]) -> normalised latents`` and
    ``encode_prompt(prompts, negatives)`` (a :class:`sana_jax.pipelines.SanaVideoPipeline`). Captions are encoded
    once each. The batches of clips go round-robin to ``mesh``'s devices, else to one device per process
    (:func:`batches_over_devices`); every process ends with the whole cache.
    """
    clips = clips if isinstance(clips, Sequence) else list(clips)
    return encode_clips(pipeline, [caption for _, caption in clips], lambda i: clips[i][0], batch_size=batch_size,
                        meta=meta, progress=progress, mesh=mesh)


def encode_clips(pipeline, captions: Sequence[str], frames: Callable[[int], np.ndarray], *, batch_size: int = 4,
                 meta: dict | None = None, progress: bool = False, mesh=None) -> LatentDataset:
    """:func:`build_cache` of clip ``i``'s uint8 frames ``frames(i)`` (read only by the process that encodes it)
    captioned ``captions[i]``."""
    if not captions:
        raise InputError("no clips to cache")
    from sana_jax.parallel.multihost import is_writer

    bar = progress_bar(progress and is_writer(), len(captions), "encoding videos", unit="clip")

    def encode(start: int, stop: int) -> np.ndarray:
        x = np.stack([np.asarray(frames(i)) for i in range(start, stop)]).astype(np.float32) / 127.5 - 1.0
        bar.update(stop - start)
        return pipeline.encode_video(x).astype(jnp.float32)

    try:
        latents = batches_over_devices(len(captions), batch_size, encode, spread_devices(mesh))
    finally:
        bar.close()
    distinct = list(dict.fromkeys(captions))
    position = {caption: i for i, caption in enumerate(distinct)}
    text, mask, null_text, null_mask = encode_captions(pipeline, distinct)
    meta = {"vae": type(pipeline.vae).__name__, **(meta or {})}
    return LatentDataset(latents, text, mask, np.asarray([position[c] for c in captions], np.int32), null_text,
                         null_mask, captions=distinct, meta=meta)


def encode_captions(pipeline, captions: Sequence[str]) -> tuple[np.ndarray, ...]:
    """(text (U, L, D) float32, mask (U, L) int32, null_text (1, L, D), null_mask (1, L)): the captions and the
    empty prompt encoded as the pipeline encodes prompts at inference (64 at a time)."""
    texts, masks = [], []
    for start in range(0, len(captions), 64):
        cond, _ = pipeline.encode_prompt(list(captions[start:start + 64]), None)
        texts.append(np.asarray(cond["text"], np.float32))
        masks.append(np.asarray(cond["mask"], np.int32))
    _, null = pipeline.encode_prompt([""], [""])
    return (np.concatenate(texts), np.concatenate(masks), np.asarray(null["text"], np.float32),
            np.asarray(null["mask"], np.int32))


def cache_video_folder(pipeline, folder, out, *, num_frames: int, height: int, width: int, batch_size: int = 4,
                       progress: bool = True, overwrite: bool = False, mesh=None) -> LatentDataset:
    """``sana-jax cache``: read, fit and encode every captioned video of ``folder`` and save the cache at ``out``.
    Several processes share the work (:func:`encode_clips`: each reads only the videos it encodes); process 0 writes
    the cache, the others wait for it."""
    from sana_jax.io.video import read_video

    items = captioned_videos(folder)

    def clip(i: int) -> np.ndarray:
        path = items[i][0]
        try:
            frames = read_video(path)
        except Exception as e:  # imageio/ffmpeg raise assorted errors
            raise InputError(f"{path}: cannot read the video ({e})") from e
        return fit_frames(frames, num_frames, height, width, str(path))

    meta = {"source": str(Path(folder).absolute()), "num_frames": num_frames, "height": height, "width": width}
    dataset = encode_clips(pipeline, [caption for _, caption in items], clip, batch_size=batch_size, meta=meta,
                           progress=progress, mesh=mesh)
    from sana_jax.commands.hosts import one_writer

    with one_writer() as writer:  # process 0 writes the cache (all of it: the batches were gathered)
        if writer:
            dataset.save(out, overwrite=overwrite)
    return dataset
