"""DC-AE-V checkpoints: the released DC-Gen ``.pt`` (``dc-ae-v-f32t4c32-1.0-bf16.pt``) and safetensors of the
same state dict.

Reference: ``dc-ai-projects/DC-Gen:dc_videogen/dc_ae_v.py`` (keys and format). The ``.pt`` is a torch pickle whose
``ema_model_state_dict`` is a dict of state dicts (the first one is the model; DC-Gen ``DCAEV.load_model``), else
``model_state_dict`` is; :func:`open_pt` reads it through the restricted unpickler (nothing is executed). A bare
state dict (``.pt`` or ``.safetensors``) is used as it is.

The JAX tree stacks each stage's residual blocks (``…stages.{s}.blocks.layers.*``, leading ``layers`` axis).
Checkpoint names are first renumbered by prefix renames (``encoder.stages.{s}.op_list.{j}.main.`` →
``encoder.stages.{s}.blocks.{j}.``; in the decoder the upsampler is ``op_list.0``, so its blocks start at 1), then
one table maps them; :func:`expected_tensors` maps back to the checkpoint's own names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from converters import tables
from converters.nnx_state import abstract_model, flat_params, merge
from converters.tables import CONV3D, Rename, Rule
from converters.torch_pickle import open_torch_state_dict, TorchStateDict
from sana_jax.config import read_json
from sana_jax.errors import CheckpointError, ConfigError
from sana_jax.vae.dcae_v import CLASS_NAME, DCAEVConfig, DCAEVideo

FAMILY = "dcae_v"
CONFIG = DCAEVConfig
MODEL_CLASS_NAME = CLASS_NAME
MODEL = DCAEVideo

_PROBE = ("encoder.project_in.conv.conv.weight", "decoder.project_out.op_list.2.conv.conv.weight")


# ---------------------------------------------------------------------------------------------------- names
def _block_offset(cfg: DCAEVConfig, part: str, s: int) -> int:
    """Index of a stage's first residual block in its ``op_list`` (1 after a decoder upsampler, else 0)."""
    return 1 if part == "decoder" and s < len(cfg.width_list) - 1 else 0


def renames(cfg: DCAEVConfig) -> list[Rename]:
    """Checkpoint block names → per-block names with a plain layer index (prefix renames)."""
    out = []
    for part in ("encoder", "decoder"):
        for s, depth in enumerate(cfg.depth_list):
            off = _block_offset(cfg, part, s)
            out += [Rename(f"{part}.stages.{s}.op_list.{j + off}.main.", f"{part}.stages.{s}.blocks.{j}.", prefix=True)
                    for j in range(depth)]
    return out


def _conv(torch: str, jax_path: str, bias: bool = True) -> list[Rule]:
    rules = [Rule(f"{torch}.weight", f"{jax_path}.kernel", CONV3D)]
    return rules + [Rule(f"{torch}.bias", f"{jax_path}.bias")] if bias else rules


def rules(cfg: DCAEVConfig) -> list[Rule]:
    """Renamed checkpoint names (see :func:`renames`) → JAX parameter paths of :class:`DCAEVideo`."""
    n = len(cfg.width_list)
    out = [*_conv("encoder.project_in.conv.conv", "encoder.project_in.conv"),
           *_conv("encoder.project_out.conv", "encoder.project_out"),
           *_conv("decoder.project_in.conv", "decoder.project_in"),
           Rule("decoder.project_out.op_list.0.weight", "decoder.project_out.norm.weight"),
           Rule("decoder.project_out.op_list.0.bias", "decoder.project_out.norm.bias"),
           *_conv("decoder.project_out.op_list.2.conv.conv", "decoder.project_out.up.conv")]
    for part in ("encoder", "decoder"):
        for s in range(1, n):
            t, j = f"{part}.stages.{s}.blocks.{{i}}", f"{part}.stages.{s}.blocks.layers"
            out += [*_conv(f"{t}.conv1.conv", f"{j}.conv1"), *_conv(f"{t}.conv2.conv", f"{j}.conv2", bias=False),
                    Rule(f"{t}.conv2.norm.weight", f"{j}.norm.weight"), Rule(f"{t}.conv2.norm.bias", f"{j}.norm.bias")]
            if s < n - 1:
                if part == "encoder":
                    op = f"encoder.stages.{s}.op_list.{cfg.depth_list[s]}.main.conv.conv"
                    out += _conv(op, f"encoder.stages.{s}.down.conv")
                else:
                    out += _conv(f"decoder.stages.{s}.op_list.0.main.conv.conv", f"decoder.stages.{s}.up.conv")
    return out


def _to_checkpoint_name(name: str, cfg: DCAEVConfig) -> str:
    for r in renames(cfg):
        if name.startswith(r.dst):
            return r.src + name[len(r.dst):]
    return name


def _checkpoint_names_in(text: str, cfg: DCAEVConfig) -> str:
    def sub(m):
        part, s, j = m.group(1), int(m.group(2)), int(m.group(3))
        return f"{part}.stages.{s}.op_list.{j + _block_offset(cfg, part, s)}.main."

    return re.sub(r"\b(encoder|decoder)\.stages\.(\d+)\.blocks\.(\d+)\.", sub, text)


# ---------------------------------------------------------------------------------------------------- files
def open_pt(path: str | os.PathLike, ema: bool = True) -> TorchStateDict:
    """The model state dict of a DC-Gen ``.pt``: ``ema_model_state_dict``'s first entry (if ``ema``), else
    ``model_state_dict``, else the file itself if it is a flat state dict."""
    keys = ("ema_model_state_dict", "model_state_dict") if ema else ("model_state_dict",)
    return open_torch_state_dict(path, nested=keys)


def open_checkpoint(path: str | os.PathLike) -> Mapping:
    """A lazy ``name -> array`` view of a DC-AE-V checkpoint file (``.pt``/``.pth`` or ``.safetensors``)."""
    from converters.quantized import dequantized
    from converters.safetensors_io import open_safetensors

    path = Path(path)
    return dequantized(open_safetensors(path) if path.name.endswith(".safetensors") else open_pt(path), str(path))


# ---------------------------------------------------------------------------------------------------- family API
def detect(keys) -> bool:
    keys = set(keys)
    return all(k in keys for k in _PROBE)


def config_from_shapes(source: Mapping, where: str) -> DCAEVConfig:
    """The structure from tensor shapes. ``chunk_frames`` (40) and ``scaling_factor`` (0.7241 for 32 latent
    channels, else 1.0) are not in the weights: the released values are assumed."""
    if not detect(source):
        raise CheckpointError(f"{where}: not a DC-AE-V checkpoint (no {_PROBE[0]!r})")
    shape = source.shape if hasattr(source, "shape") else (lambda k: np.shape(source[k]))
    latent = shape("encoder.project_out.conv.weight")[0]
    cin = shape("encoder.project_in.conv.conv.weight")[1]
    stages = sorted({int(k.split(".")[2]) for k in source if k.startswith("encoder.stages.")})
    n = max(stages, default=0) + 1
    widths, depths = [0] * n, [0] * n
    for s in stages:
        blocks = {int(k.split(".")[4]) for k in source
                  if k.startswith(f"encoder.stages.{s}.op_list.") and ".main.conv1." in k}
        depths[s] = len(blocks)
        if blocks:
            widths[s] = shape(f"encoder.stages.{s}.op_list.0.main.conv1.conv.weight")[0]
    if n < 3 or depths[0] or not all(depths[1:]):
        raise ConfigError(f"{where}: cannot infer the DC-AE-V structure (stages {stages}, depths {depths})")
    temporal = widths[n - 1] // shape(f"encoder.stages.{n - 2}.op_list.{depths[n - 2]}.main.conv.conv.weight")[0]
    sf = DCAEVConfig.scaling_factor if latent == 32 else 1.0
    widths[0] = widths[1] // 2  # unused by the network (stage 0 is empty); the released value is 128 = 256 // 2
    return DCAEVConfig(latent_channels=latent, in_channels=cin, width_list=tuple(widths), depth_list=tuple(depths),
                       temporal_compression=temporal, scaling_factor=sf)


def config_from_checkpoint(source: Mapping, where: str) -> DCAEVConfig:
    """A DC-AE-V ``config.json`` beside the file if there is one (it carries ``chunk_frames``), else the shapes."""
    sidecar = Path(where).parent / "config.json"
    raw = read_json(sidecar, missing={})
    if "width_list" in raw and raw.get("_class_name", CLASS_NAME) == CLASS_NAME:
        return DCAEVConfig.from_diffusers(raw, str(sidecar))
    return config_from_shapes(source, where)


def abstract(config: DCAEVConfig, dtype=jnp.float32):
    """``(graphdef, abstract_state, targets)`` of a :class:`DCAEVideo`; allocates nothing."""
    return abstract_model(lambda: DCAEVideo(config, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0)))


def load(source: Mapping | str | os.PathLike, config: DCAEVConfig | None = None, *, where: str | None = None,
         dtype=None, progress=None) -> DCAEVideo:
    """Build a :class:`DCAEVideo` from a checkpoint mapping (or a path: ``.pt`` or ``.safetensors``); every key
    must be consumed. ``config`` defaults to :func:`config_from_checkpoint`."""
    if isinstance(source, (str, os.PathLike)):
        where = where or str(source)
        source = open_checkpoint(source)
    where = where or "checkpoint"
    if not detect(source):
        raise CheckpointError(f"{where}: not a DC-AE-V checkpoint (expected keys {', '.join(_PROBE)})")
    config = config or config_from_checkpoint(source, where)
    renamed = tables.RenamedSource(source, renames(config), where)
    dtype = jnp.dtype(dtype) if dtype is not None else tables.checkpoint_dtype(source, _PROBE[0])
    graphdef, state, targets = abstract(config, dtype)
    table = rules(config)
    if progress is not None:
        progress.reset(total=tables.count_tensors(table, renamed))
    try:
        flat = tables.load_params(table, targets, renamed, where, place=lambda _p, a: jax.device_put(a),
                                  progress=progress)
    except CheckpointError as e:  # report the checkpoint's own names, not the renumbered ones
        raise CheckpointError(_checkpoint_names_in(str(e), config)) from e
    return merge(graphdef, state, flat)


def expected_tensors(config: DCAEVConfig) -> dict[str, tuple[int, ...]]:
    """Checkpoint names and torch shapes of a model with ``config`` (no memory allocated)."""
    names = tables.expected_tensors(rules(config), abstract(config)[2])
    return {_to_checkpoint_name(k, config): v for k, v in names.items()}


def export(model: DCAEVideo) -> dict[str, np.ndarray]:
    """The model's parameters as a DC-Gen state dict (numpy, checkpoint names)."""
    out = tables.export_tensors(rules(model.config), {k: np.asarray(v) for k, v in flat_params(model).items()})
    return {_to_checkpoint_name(k, model.config): v for k, v in out.items()}


__all__ = ["CONFIG", "FAMILY", "MODEL", "MODEL_CLASS_NAME", "abstract", "config_from_checkpoint",
           "config_from_shapes", "detect", "expected_tensors", "export", "load", "open_checkpoint", "open_pt",
           "renames", "rules"]
