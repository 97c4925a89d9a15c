"""``converters.load(path)``: find the checkpoint format and model family of a path and build the module.

Accepted paths:

* a diffusers component folder (``config.json`` + ``diffusion_pytorch_model.safetensors`` or a sharded
  ``*.safetensors.index.json``), or a diffusers pipeline folder (``model_index.json``; its ``transformer/`` is loaded);
* a single ``.safetensors`` file or a ``.safetensors.index.json``;
* an original PyTorch ``.pth``/``.pt``/``.bin`` checkpoint (read without torch and without running its pickle);
* a folder written by :func:`save_orbax` / ``sana-jax convert``.

Without a ``config.json`` the configuration is taken from ``config=`` or inferred from tensor shapes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from converters import sana_video
from converters.nnx_state import flatten, merge
from converters.safetensors_io import open_safetensors, save_safetensors
from converters.torch_pickle import open_torch_state_dict
from sana_jax.errors import CheckpointError, ConfigError
from sana_jax.io import checkpoints
from sana_jax.models.sana_video import DIFFUSERS_CLASS, SanaVideoConfig, SanaVideoTransformer

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.safetensors",
                "model.safetensors.index.json", "model.safetensors")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def _progress(enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(desc=desc, unit="tensor", leave=False)


def open_checkpoint(path: Path) -> Mapping:
    """A lazy ``name -> array`` mapping over a checkpoint file (safetensors, sharded index or torch zip)."""
    if path.name.endswith(".safetensors") or path.name.endswith(".safetensors.index.json"):
        return open_safetensors(path)
    if path.suffix in TORCH_SUFFIXES:
        return open_torch_state_dict(path, nested=("state_dict", "model", "module"))
    raise CheckpointError(f"{path}: unknown checkpoint format (expected .safetensors, .safetensors.index.json, "
                          f"or one of {', '.join(TORCH_SUFFIXES)})")


def _component_weights(folder: Path) -> Path:
    for name in WEIGHT_NAMES:
        if (folder / name).exists():
            return folder / name
    raise CheckpointError(f"{folder}: no weights found (looked for {', '.join(WEIGHT_NAMES)})")


def _read_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config ({e})") from e


def _as_config(config, where: str) -> SanaVideoConfig | None:
    if config is None or isinstance(config, SanaVideoConfig):
        return config
    if isinstance(config, Mapping):
        return SanaVideoConfig.from_diffusers(config, source=where)
    return SanaVideoConfig.from_json(config)


def load(path: str | os.PathLike, *, dtype=None, config=None, progress: bool = False) -> nnx.Module:
    """Load a model from ``path`` (see the module docstring) and return the NNX module.

    Args:
      dtype: parameter and compute dtype (default: the checkpoint's floating dtype).
      config: a ``SanaVideoConfig``, a diffusers config dict or a ``config.json`` path, for checkpoints that
        carry none (original ``.pth``, bare ``.safetensors``).
      progress: show a progress bar while tensors are converted.

    Raises:
      CheckpointError: unreadable file, missing/unexpected keys, shape mismatches.
      ConfigError: a config of another model, or an invalid one.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir():
        if checkpoints.is_checkpoint(path):
            return load_orbax(path, dtype=dtype)
        if (path / "model_index.json").exists():
            if not (path / "transformer").is_dir():
                raise CheckpointError(f"{path}: pipeline folder without a transformer/ subfolder")
            return load(path / "transformer", dtype=dtype, config=config, progress=progress)
        if not (path / "config.json").exists():
            raise CheckpointError(f"{path}: folder has no config.json, model_index.json or {checkpoints.MANIFEST}")
        raw = _read_config(path / "config.json")
        cls = raw.get("_class_name")
        if cls != DIFFUSERS_CLASS:
            raise ConfigError(f"{path / 'config.json'}: model class {cls!r} is not supported by converters.load "
                              f"(supported: {DIFFUSERS_CLASS})")
        cfg = _as_config(config, str(path)) or SanaVideoConfig.from_diffusers(raw, str(path / "config.json"))
        weights = _component_weights(path)
        source = open_checkpoint(weights)
    else:
        source = open_checkpoint(path)
        weights = path
        cfg = _as_config(config, str(path))
        sidecar = path.parent / "config.json"
        if cfg is None and sidecar.exists():
            cfg = SanaVideoConfig.from_diffusers(_read_config(sidecar), str(sidecar))
    if not (sana_video.is_diffusers_layout(source) or sana_video.is_original_layout(source)):
        raise CheckpointError(f"{weights}: tensor names match no supported model family "
                              f"(first keys: {sorted(source)[:5]})")
    renamed = sana_video.as_diffusers(source, str(weights))
    cfg = cfg or sana_video.config_from_shapes(renamed, str(weights))
    bar = _progress(progress, f"loading {weights.name}")
    try:
        return sana_video.load(source, cfg, where=str(weights), dtype=dtype, progress=bar)
    finally:
        if bar is not None:
            bar.close()


def save_orbax(model: nnx.Module, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save ``model`` as an orbax checkpoint that :func:`load` reads back (atomic: temp folder, then rename)."""
    if not isinstance(model, SanaVideoTransformer):
        raise CheckpointError(f"save_orbax does not know model type {type(model).__name__}")
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    dtype = str(np.dtype(model.patch_embedding_kernel.dtype))
    manifest = {"family": sana_video.FAMILY, "config": model.config.to_diffusers(), "dtype": dtype,
                "format": 1}
    return checkpoints.save(params, manifest, path, overwrite=overwrite)


def load_orbax(path: str | os.PathLike, *, dtype=None) -> nnx.Module:
    manifest = checkpoints.read_manifest(path)
    if manifest.get("family") != sana_video.FAMILY:
        raise CheckpointError(f"{path}: unknown model family {manifest.get('family')!r}")
    cfg = SanaVideoConfig.from_diffusers(manifest["config"], f"{path}/{checkpoints.MANIFEST}")
    stored = jnp.dtype(manifest.get("dtype", "float32"))
    graphdef, state, targets = sana_video.abstract(cfg, stored)
    restored = checkpoints.restore(path, checkpoints.abstract_leaves(nnx.to_pure_dict(state)))
    flat = flatten(restored)
    if dtype is not None and jnp.dtype(dtype) != stored:
        graphdef, state, _ = sana_video.abstract(cfg, jnp.dtype(dtype))
        flat = {k: v.astype(dtype) for k, v in flat.items()}
    return merge(graphdef, state, flat)


def export_safetensors(model: nnx.Module, folder: str | os.PathLike) -> Path:
    """Write ``model`` as a diffusers component folder (``config.json`` + safetensors) that diffusers loads."""
    if not isinstance(model, SanaVideoTransformer):
        raise CheckpointError(f"export_safetensors does not know model type {type(model).__name__}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(sana_video.export(model), folder / "diffusion_pytorch_model.safetensors",
                     metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(model.config.to_diffusers(), indent=2))
    return folder
