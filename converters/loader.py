"""``converters.load(path)``: find the checkpoint format and model family of a path and build the module.

Accepted paths:

* a diffusers component folder (``config.json`` + ``diffusion_pytorch_model.safetensors`` or a sharded
  ``*.safetensors.index.json``), or a diffusers pipeline folder (``model_index.json``; ``component`` picks the
  subfolder, ``transformer`` by default);
* a single ``.safetensors`` file or a ``.safetensors.index.json`` (a native LTX-2 file carries its configuration
  in its metadata);
* an original PyTorch ``.pth``/``.pt``/``.bin`` checkpoint (read without torch and without running its pickle);
* a folder written by :func:`save_orbax` / ``sana-jax convert``;
* a Hugging Face Hub id (``org/name``) that is no local path: its snapshot in the hub's cache, downloaded unless
  offline (:func:`converters.hub.resolve`).

Without a ``config.json`` the configuration is taken from ``config=``, a ``config.json`` beside the file, the
file's metadata, or (SANA-Video) the tensor shapes.

With ``mesh=`` the parameters are placed by the logical-axis rules (``sana_jax.parallel.rules``) while they are
read: each device receives only its shard and, from safetensors, only the bytes of the shards this process holds
are read (``converters.tables`` "Sharded loading"). An orbax folder is restored whole, then placed.

``loras=`` fuses LoRA files into the weights while they stream in, and ``video_only=`` builds an LTX-2 transformer
without its audio stream (families whose ``load`` takes these options: ``converters.ltx2_transformer``).

8-bit checkpoints (fp8 / int8 weights with ``weight_scale`` or ``scale_weight``, ``converters.quantized``) load in
every family: dequantised to the compute dtype as they stream in, or, with ``weights="fp8"`` / ``"int8"``, every
Linear kept in 8 bits with a per-output-channel scale (any checkpoint; an orbax folder stores and restores it so).
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from converters import (dcae_v, gemma, ltx2_connectors, ltx2_transformer, ltx2_upsampler, ltx2_vae, patch_vae,
                        sana_video, umt5, wan_transformer, wan_vae)
from converters import quantized, tables
from converters.hub import resolve
from converters.nnx_state import flatten, merge
from converters.safetensors_io import open_safetensors, save_safetensors
from converters.torch_pickle import open_torch_state_dict
from sana_jax.config import read_json
from sana_jax.errors import CheckpointError, ConfigError
from sana_jax.io import checkpoints
from sana_jax.progress import progress_bar
from sana_jax.validate import all_finite

#: Model families. Each module provides FAMILY, MODEL_CLASS_NAME (diffusers ``_class_name``), CONFIG (with
#: ``from_diffusers``/``to_diffusers``), MODEL, ``detect(keys)``, ``config_from_checkpoint(source, where)``,
#: ``abstract(config, dtype)`` and ``load(source, config, where=, dtype=, progress=)``.
FAMILIES = {m.FAMILY: m for m in (sana_video, ltx2_vae, wan_vae, ltx2_connectors, gemma, ltx2_transformer,
                                   ltx2_upsampler, dcae_v, patch_vae, wan_transformer, umt5)}
BY_CLASS = {name: m for m in FAMILIES.values() for name in getattr(m, "MODEL_CLASS_NAMES", (m.MODEL_CLASS_NAME,))}

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.safetensors",
                "model.safetensors.index.json", "model.safetensors")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def register(module) -> None:
    """Add a converter family (see :data:`FAMILIES` for what the module must provide)."""
    FAMILIES[module.FAMILY] = module
    for name in getattr(module, "MODEL_CLASS_NAMES", (module.MODEL_CLASS_NAME,)):
        BY_CLASS[name] = module


def class_name(config: Mapping) -> str | None:
    """The model class a config names: diffusers' ``_class_name``, else transformers' ``architectures[0]``."""
    archs = config.get("architectures") or [None]
    return config.get("_class_name") or archs[0]


def open_checkpoint(path: Path) -> Mapping:
    """A lazy ``name -> array`` mapping over a checkpoint file (safetensors, sharded index or torch zip); scaled
    8-bit weights come out dequantised, their scales hidden (:func:`converters.quantized.dequantized`)."""
    path = Path(path)
    if path.name.endswith(".safetensors") or path.name.endswith(".safetensors.index.json"):
        return quantized.dequantized(open_safetensors(path), str(path))
    if path.suffix in TORCH_SUFFIXES:
        return quantized.dequantized(open_torch_state_dict(path), str(path))
    raise CheckpointError(f"{path}: unknown checkpoint format (expected .safetensors, .safetensors.index.json, "
                          f"or one of {', '.join(TORCH_SUFFIXES)})")


def weights_file(folder: str | os.PathLike) -> Path:
    """The weights of a diffusers component folder (``diffusion_pytorch_model.safetensors``, ``model.safetensors``
    or their sharded ``.index.json``); a :class:`CheckpointError` naming the folder and the names looked for."""
    folder = Path(folder)
    for name in WEIGHT_NAMES:
        if (folder / name).exists():
            return folder / name
    raise CheckpointError(f"{folder}: no weights found (looked for {', '.join(WEIGHT_NAMES)})")


def _as_config(family, config, where: str):
    if config is None or isinstance(config, family.CONFIG):
        return config
    if isinstance(config, Mapping):
        return family.CONFIG.from_diffusers(config, source=where)
    return family.CONFIG.from_diffusers(read_json(config), source=str(config))


def _family_for_class(name, where: Path):
    family = BY_CLASS.get(name)
    if family is None:
        raise ConfigError(f"{where}: model class {name!r} is not supported by converters.load "
                          f"(supported: {', '.join(sorted(BY_CLASS))})")
    return family


def eight_bit_parameters(family, config) -> int:
    """How many of a model's parameters ``weights="fp8"`` / ``"int8"`` stores in 8 bits (its dense kernels), from
    ``config`` of ``family`` (a converters module) alone: shapes only, nothing read or allocated."""
    with quantized.storing("int8"):
        _, _, targets = family.abstract(config)
    return sum(int(np.prod(shape)) for shape, dtype in targets.values() if dtype == np.int8)


def folder_eight_bit_parameters(folder: str | os.PathLike) -> int:
    """:func:`eight_bit_parameters` of a diffusers component folder (its ``config.json``)."""
    raw = read_json(Path(folder) / "config.json")
    family = _family_for_class(class_name(raw), Path(folder) / "config.json")
    return eight_bit_parameters(family, family.CONFIG.from_diffusers(raw, str(Path(folder) / "config.json")))


def _detect(source: Mapping, path: Path, component: str | None):
    if component is not None:
        if component not in FAMILIES:
            raise ConfigError(f"unknown component {component!r}; expected one of {sorted(FAMILIES)}")
        if not FAMILIES[component].detect(source):
            raise CheckpointError(f"{path}: holds no {component} weights")
        return FAMILIES[component]
    found = [f for f in FAMILIES.values() if f.detect(source)]
    if not found:
        raise CheckpointError(f"{path}: tensor names match no supported model family "
                              f"(first keys: {sorted(source)[:5]})")
    if len(found) > 1:
        raise CheckpointError(f"{path}: holds several models ({', '.join(f.FAMILY for f in found)}); "
                              "choose one with component=")
    return found[0]


def mesh_shardings(family, config, mesh, rules=None) -> dict:
    """Flat JAX path → ``NamedSharding`` of every parameter of ``family``'s model with ``config`` on ``mesh``
    (logical-axis ``rules``, default ``INFERENCE_RULES``); computed from the abstract model, nothing allocated."""
    from sana_jax.parallel.rules import INFERENCE_RULES, param_shardings

    _, state, _ = family.abstract(config, jnp.float32)
    return flatten(nnx.to_pure_dict(param_shardings(state, mesh, INFERENCE_RULES if rules is None else rules)))


def open_loras(loras: Sequence[tuple]) -> list[tuple[Mapping, float]]:
    """``(path, strength)`` pairs → ``(lazy tensor mapping, strength)`` pairs (a mapping is taken as it is)."""
    opened = []
    for lora, strength in loras:
        if not isinstance(lora, Mapping):
            if not Path(lora).is_file():
                raise CheckpointError(f"LoRA {lora}: no such file")
            lora = open_checkpoint(Path(lora))
        opened.append((lora, float(strength)))
    return opened


def _load_options(family, path: Path, loras, video_only) -> dict:
    """The extra ``family.load`` arguments asked for; a :class:`ConfigError` when the family does not take them."""
    options = {"loras": open_loras(loras)} if loras else {}
    if video_only is not None:
        options["video_only"] = video_only
    unknown = [k for k in options if k not in inspect.signature(family.load).parameters]
    if unknown:
        raise ConfigError(f"{path}: a {family.FAMILY} model takes no {' or '.join(unknown)}")
    return options


def load(path: str | os.PathLike, *, dtype=None, config=None, component: str | None = None,
         progress: bool = False, mesh=None, rules=None, loras: Sequence[tuple] = (),
         video_only: bool | None = None, local_files_only: bool = False, weights: str | None = None) -> nnx.Module:
    """Load a model from ``path`` (see the module docstring) and return the NNX module.

    Args:
      dtype: parameter and compute dtype (default: the checkpoint's floating dtype).
      config: the model's config object, a diffusers config dict or a ``config.json`` path, for checkpoints that
        carry none (original ``.pth``, bare ``.safetensors``).
      component: for a pipeline folder, the subfolder to load (default ``transformer``); for a file holding several
        models (a native LTX-2 all-in-one file), the family to take from it (e.g. ``"ltx2_vae"``).
      progress: show a progress bar while tensors are converted.
      mesh / rules: load straight onto a ``jax.sharding.Mesh``, each parameter sharded per the logical-axis
        ``rules`` (default ``sana_jax.parallel.INFERENCE_RULES``), each device receiving only its shard.
      loras: ``(path or tensor mapping, strength)`` pairs fused into the weights while they stream in
        (``converters.ltx2_transformer.fuse_lora``).
      video_only: an LTX-2 transformer without its audio stream and a↔v attention (None: the checkpoint's).
      local_files_only: a Hub id is only looked up in the local cache (:func:`converters.hub.resolve`).
      weights: ``"fp8"`` / ``"int8"``: every Linear kernel stored in 8 bits (``float8_e4m3fn`` / ``int8``) with a
        float32 per-output-channel scale, quantised as it streams in (an 8-bit weight stored so keeps its file
        scale and bytes); None: weights in ``dtype`` (8-bit checkpoints dequantised). An orbax folder loads as it
        was saved.

    Raises:
      CheckpointError: unreadable file, missing/unexpected keys, shape mismatches.
      ConfigError: a config of another model, or an invalid one.
    """
    quantized.check_weights(weights)
    path = resolve(path, local_files_only=local_files_only)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir():
        if checkpoints.is_checkpoint(path):
            if loras or video_only is not None:
                raise ConfigError(f"{path}: an orbax checkpoint is loaded as saved (no loras= or video_only=)")
            model = load_orbax(path, dtype=dtype, weights=weights)
            if mesh is not None:
                from sana_jax.parallel.rules import INFERENCE_RULES, shard_state

                nnx.update(model, shard_state(nnx.state(model), mesh, INFERENCE_RULES if rules is None else rules))
            return model
        if (path / "model_index.json").exists():
            sub = component or "transformer"
            if not (path / sub).is_dir():
                raise CheckpointError(f"{path}: pipeline folder without a {sub}/ subfolder")
            return load(path / sub, dtype=dtype, config=config, progress=progress, mesh=mesh, rules=rules,
                        loras=loras, video_only=video_only, weights=weights)
        if not (path / "config.json").exists():
            raise CheckpointError(f"{path}: folder has no config.json, model_index.json or {checkpoints.MANIFEST}")
        raw = read_json(path / "config.json")
        family = _family_for_class(class_name(raw), path / "config.json")
        cfg = _as_config(family, config, str(path)) or family.CONFIG.from_diffusers(raw, str(path / "config.json"))
        file = weights_file(path)
        source = open_checkpoint(file)
    else:
        file = path
        source = open_checkpoint(path)
        family = _detect(source, path, component)
        cfg = _as_config(family, config, str(path))
        sidecar = path.parent / "config.json"
        if cfg is None and sidecar.exists():
            raw = read_json(sidecar)
            if BY_CLASS.get(class_name(raw)) is family:
                cfg = family.CONFIG.from_diffusers(raw, str(sidecar))
        cfg = cfg or family.config_from_checkpoint(source, str(path))
    options = _load_options(family, path, loras, video_only)
    bar = progress_bar(progress, desc=f"loading {file.name}", unit="tensor")
    try:
        with quantized.storing(weights):
            shardings = None if mesh is None else mesh_shardings(family, cfg, mesh, rules)
            with tables.sharded_loading(shardings):
                return family.load(source, cfg, where=str(file), dtype=dtype, progress=bar, **options)
    finally:
        bar.close()


def _family_of(model: nnx.Module):
    for family in FAMILIES.values():
        if isinstance(model, family.MODEL):
            return family
    raise CheckpointError(f"no converter family knows model type {type(model).__name__}")


def save_orbax(model: nnx.Module, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save ``model`` as an orbax checkpoint that :func:`load` reads back (atomic: temp folder, then rename); 8-bit
    Linear kernels are saved as they are, with their scales (manifest ``weights``)."""
    family = _family_of(model)
    state = nnx.to_pure_dict(nnx.state(model))
    names = {np.dtype(v.dtype).name for v in flatten(state).values()}
    dtype = next((d for d in ("bfloat16", "float16") if d in names), "float32")
    manifest = {"family": family.FAMILY, "config": model.config.to_diffusers(), "dtype": dtype, "format": 1}
    if quantized.weights_format(model) is not None:
        manifest["weights"] = quantized.weights_format(model)
    return checkpoints.save(state, manifest, path, overwrite=overwrite)


def load_orbax(path: str | os.PathLike, *, dtype=None, weights: str | None = None) -> nnx.Module:
    """Load a folder written by :func:`save_orbax`, optionally casting to ``dtype`` (8-bit kernels stay 8-bit);
    ``weights``, when given, must be what the folder holds."""
    manifest = checkpoints.read_manifest(path)
    family = FAMILIES.get(manifest.get("family"))
    if family is None:
        raise CheckpointError(f"{path}: unknown model family {manifest.get('family')!r}")
    saved = manifest.get("weights")
    if weights is not None and weights != saved:
        raise ConfigError(f"{path}: saved with {saved or 'full-precision'} weights; an orbax checkpoint loads as "
                          f"saved (weights={saved!r}), not as {weights}")
    cfg = family.CONFIG.from_diffusers(manifest["config"], f"{path}/{checkpoints.MANIFEST}")
    with quantized.storing(saved):
        graphdef, state, _ = family.abstract(cfg, jnp.dtype(manifest.get("dtype", "float32")))
    restored = flatten(checkpoints.restore(path, checkpoints.abstract_leaves(nnx.to_pure_dict(state))))
    if not all_finite(restored):  # one pass over the whole checkpoint; then name the tensor
        name = next(k for k, v in restored.items() if not all_finite(v))
        raise CheckpointError(f"{path}: tensor {name!r} holds NaN/Inf values: the checkpoint is damaged (or was "
                              "saved from a diverged run)")
    if dtype is not None:
        with quantized.storing(saved):
            graphdef, state, targets = family.abstract(cfg, jnp.dtype(dtype))
        restored = {k: v.astype(targets[k][1]) for k, v in restored.items()}
    return merge(graphdef, state, restored)


def export_safetensors(model: nnx.Module, folder: str | os.PathLike) -> Path:
    """Write ``model`` as a diffusers component folder (``config.json`` + safetensors) that diffusers loads; 8-bit
    Linear kernels are written as 8-bit weights with their ``weight_scale`` (which :func:`load` reads back, and
    diffusers does not)."""
    family = _family_of(model)
    if not hasattr(family, "export"):
        raise CheckpointError(f"export_safetensors does not support {type(model).__name__} yet")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(family.export(model), folder / "diffusion_pytorch_model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(model.config.to_diffusers(), indent=2))
    return folder
