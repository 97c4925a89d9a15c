"""Latents on disk: normalised LTX-2 latents (B, T, H, W, C), channels-last, float32, as ``.npy`` or
``.safetensors`` (tensor ``"latents"``) — what ``sana-jax generate --save-latents`` writes and ``sana-jax refine``
reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converters.safetensors_io import open_safetensors, save_safetensors
from sana_jax.errors import InputError
from sana_jax.io.files import check_output_file, publish, unique_temporary

LATENTS_KEY = "latents"
LATENT_SUFFIXES = (".npy", ".safetensors")


def check_latents_path(path: str | Path, option: str = "--save-latents") -> Path:
    """``path`` if it names a latents file format (:data:`LATENT_SUFFIXES`), else an :class:`InputError` naming
    ``option``: checked before anything is computed."""
    path = Path(path)
    if path.suffix not in LATENT_SUFFIXES:
        raise InputError(f"{option} {path}: latents are saved as .npy or .safetensors")
    return path


def save_latents(latents, path: str | Path, *, overwrite: bool = False) -> Path:
    """Save normalised LTX-2 latents (B, T, H, W, C), channels-last, float32, as ``.npy`` or ``.safetensors``
    (tensor ``"latents"``) — the input :func:`load_latents` and ``sana-jax refine`` read. Written under a temporary
    name unique to this call and renamed when complete; an existing ``path`` is refused unless ``overwrite``
    (:mod:`sana_jax.io.files`)."""
    path = check_output_file(check_latents_path(path), None, suffixes=LATENT_SUFFIXES, overwrite=overwrite)
    arr = np.asarray(latents, np.float32)
    if arr.ndim != 5:
        raise InputError(f"latents must be (B, T, H, W, C), got shape {arr.shape}")
    tmp = unique_temporary(path, path.suffix)
    try:
        if path.suffix == ".safetensors":
            save_safetensors({LATENTS_KEY: arr}, tmp,
                             metadata={"layout": "BTHWC", "space": "normalised LTX-2 latents"})
        else:
            with open(tmp, "wb") as f:
                np.save(f, arr)
        return publish(tmp, path, overwrite=overwrite)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_latents(path: str | Path) -> np.ndarray:
    """Normalised LTX-2 latents from ``.npy`` / ``.safetensors`` (tensor ``"latents"``, or the only tensor), as
    float32 (B, T, H, W, C); a (T, H, W, C) array gets a batch axis."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: cannot read as a .npy array ({e})") from e
    elif path.suffix == ".safetensors":
        src = open_safetensors(path)
        names = list(src)
        if LATENTS_KEY in names:
            arr = src[LATENTS_KEY]
        elif len(names) == 1:
            arr = src[names[0]]
        else:
            raise InputError(f"{path}: holds {len(names)} tensors and none is named {LATENTS_KEY!r}")
    else:
        raise InputError(f"{path}: latents must be .npy or .safetensors")
    arr = np.asarray(arr, np.float32)
    if arr.ndim == 4:
        arr = arr[None]
    if arr.ndim != 5:
        raise InputError(f"{path}: latents must be (B, T, H, W, C) or (T, H, W, C) channels-last, got {arr.shape}")
    return arr
