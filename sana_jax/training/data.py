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
from collections.abc import Iterable, Sequence
from pathlib import Path

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


def build_cache(pipeline, clips: Iterable[tuple[np.ndarray, str]], *, batch_size: int = 4,
                meta: dict | None = None, progress: bool = False) -> LatentDataset:
    """Encode ``(uint8 frames (T, H, W, 3), caption)`` clips with the pipeline's VAE and text encoder.

    ``pipeline`` provides ``encode_video(float frames (B, T, H, W, 3) in [-1, 1]) -> normalised latents`` and
    ``encode_prompt(prompts, negatives)`` (a :class:`sana_jax.pipelines.SanaVideoPipeline`). Captions are encoded
    once each.
    """
    latents, captions, index, pending = [], [], [], []
    position: dict[str, int] = {}

    def flush():
        x = np.stack([f for f, _ in pending]).astype(np.float32) / 127.5 - 1.0
        latents.append(np.asarray(pipeline.encode_video(x), np.float32))
        pending.clear()

    bar = progress_bar(progress, len(clips) if hasattr(clips, "__len__") else None, "encoding videos", unit="clip")
    for frames, caption in clips:
        if caption not in position:
            position[caption] = len(captions)
            captions.append(caption)
        index.append(position[caption])
        pending.append((np.asarray(frames), caption))
        if len(pending) == batch_size:
            flush()
        bar.update()
    if pending:
        flush()
    bar.close()
    if not index:
        raise InputError("no clips to cache")
    text, mask, null_text, null_mask = encode_captions(pipeline, captions)
    meta = {"vae": type(pipeline.vae).__name__, **(meta or {})}
    return LatentDataset(np.concatenate(latents), text, mask, np.asarray(index, np.int32), null_text, null_mask,
                         captions=captions, meta=meta)


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
                       progress: bool = True, overwrite: bool = False) -> LatentDataset:
    """``sana-jax cache``: read, fit and encode every captioned video of ``folder`` and save the cache at ``out``."""
    from sana_jax.io.video import read_video

    items = captioned_videos(folder)

    def clips():
        for path, caption in items:
            try:
                frames = read_video(path)
            except Exception as e:  # imageio/ffmpeg raise assorted errors
                raise InputError(f"{path}: cannot read the video ({e})") from e
            yield fit_frames(frames, num_frames, height, width, str(path)), caption

    meta = {"source": str(Path(folder).absolute()), "num_frames": num_frames, "height": height, "width": width}
    dataset = build_cache(pipeline, clips(), batch_size=batch_size, meta=meta, progress=progress)
    dataset.save(out, overwrite=overwrite)
    return dataset
