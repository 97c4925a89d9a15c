"""Reading a diffusers pipeline folder, and checking a requested video size before any model is loaded."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from converters.hub import resolve
from sana_jax.config import read_json
from sana_jax.errors import CheckpointError, ConfigError, InputError
from sana_jax.validate import integer_problem
from sana_jax.vae import DCAEVConfig, DCAEVideo, LTX2VAE, LTX2VAEConfig, WanVAE, WanVAEConfig
from sana_jax.vae import dcae_v, ltx2, wan
from sana_jax.vae.common import nearest_valid
from sana_jax.vae.patch import PatchVAE, PatchVAEConfig


class VAESpec(NamedTuple):
    """What the pipelines need to know of a VAE before loading it (the VAE modules' ``compression`` and
    ``causal_first_frame``): frames = 1 + temporal·k when ``causal_first_frame`` (Wan, LTX-2), else temporal·k
    (DC-AE-V)."""

    temporal: int
    spatial: int
    causal_first_frame: bool


#: VAE class named in ``model_index.json`` → (its config class, its module class): enough to read the frame and size
#: rules from ``vae/config.json`` without weights. DC-AE-V has no diffusers class: its folder lists
#: ``"vae": ["sana_jax", "DCAEVideo"]`` and ``vae/`` holds the ``config.json`` + ``diffusion_pytorch_model.safetensors``
#: that ``converters.export_safetensors`` writes.
VAE_CLASSES: dict[str, tuple[type, type]] = {
    wan.DIFFUSERS_CLASS: (WanVAEConfig, WanVAE), ltx2.DIFFUSERS_CLASS: (LTX2VAEConfig, LTX2VAE),
    dcae_v.CLASS_NAME: (DCAEVConfig, DCAEVideo), "SanaJaxPatchVAE": (PatchVAEConfig, PatchVAE)}


def as_mesh(mesh):
    """A ``jax.sharding.Mesh`` as it is, or a spec string such as ``"data=2,context=4"`` made into one
    (``sana_jax.parallel.make_mesh``); None stays None."""
    if isinstance(mesh, str):
        from sana_jax.parallel import make_mesh

        return make_mesh(mesh)
    return mesh


def latent_frames(num_frames: int, temporal: int, causal_first_frame: bool = True) -> int:
    """Latent frames of a video: 1 + t·k frames → 1 + k (causal first frame), t·k frames → k."""
    return (num_frames - 1) // temporal + 1 if causal_first_frame else num_frames // temporal


@dataclasses.dataclass(frozen=True)
class PipelineFolder:
    """The components of a diffusers pipeline folder (``model_index.json`` + one subfolder per component)."""

    root: Path
    index: dict

    @classmethod
    def open(cls, root: str | Path, *, local_files_only: bool = False) -> "PipelineFolder":
        """The folder ``root``, or the Hub id ``org/name``'s snapshot in the Hugging Face cache
        (``converters.resolve``: downloaded unless ``local_files_only`` or ``HF_HUB_OFFLINE``)."""
        root = resolve(root, local_files_only=local_files_only)
        path = root / "model_index.json"
        if not path.is_file():
            raise CheckpointError(f"{root}: not a diffusers pipeline folder (no model_index.json)")
        index = read_json(path, error=CheckpointError)
        for name, entry in index.items():  # components are [library, class] pairs ([null, null]: absent); other
            if name.startswith("_") or not isinstance(entry, list):  # keys are metadata and the pipeline's settings
                continue
            if len(entry) != 2 or not all(v is None or (isinstance(v, str) and v) for v in entry):
                raise ConfigError(f"{path}: {name!r} must be a [library, class] pair of names, got {entry!r}")
        return cls(root, index)

    def component(self, name: str) -> Path:
        """The subfolder of component ``name``; the error names the folder it looked in."""
        entry = self.index.get(name)
        if not isinstance(entry, list) or entry[0] is None:
            raise CheckpointError(f"{self.root / 'model_index.json'} lists no {name!r} component")
        folder = self.root / name
        if not folder.is_dir():
            raise CheckpointError(f"missing component {name!r}: no folder {folder}")
        return folder

    def defaults(self) -> dict:
        """Generation defaults stored by sana-jax under ``_sana_jax`` in ``model_index.json`` (empty for the
        released folders): height, width, num_frames, num_inference_steps, guidance_scale, fps,
        complex_human_instruction (None: no prefix), max_sequence_length."""
        stored = self.index.get("_sana_jax") or {}
        if not isinstance(stored, dict):
            raise ConfigError(f"{self.root / 'model_index.json'}: _sana_jax must be an object of generation defaults, "
                              f"got {stored!r}")
        return dict(stored)

    def class_name(self, name: str) -> str:
        """The class ``model_index.json`` names for component ``name``; a :class:`CheckpointError` if it has none."""
        entry = self.index.get(name)
        if not isinstance(entry, list) or entry[1] is None:
            raise CheckpointError(f"{self.root / 'model_index.json'} lists no {name!r} component")
        return entry[1]

    def transformer_size(self, key: str, default):
        """A size from ``transformer/config.json`` (``patch_size``, ``sample_size``, ``in_channels``): an integer
        ≥ 1, or a list of them; a :class:`ConfigError` naming the file and key otherwise."""
        value = self.config("transformer").get(key, default)
        for v in value if isinstance(value, list) else [value]:
            problem = integer_problem(v, 1)
            if problem:
                raise ConfigError(f"{self.component('transformer') / 'config.json'}: key {key!r} {problem}")
        return value

    def config(self, name: str, file: str = "config.json") -> dict:
        return read_json(self.component(name) / file)

    def vae_spec(self) -> VAESpec:
        """(temporal, spatial, causal_first_frame) of the folder's VAE, from ``vae/config.json`` (no weights)."""
        cls = self.class_name("vae")
        if cls not in VAE_CLASSES:
            raise ConfigError(f"{self.root}: VAE class {cls!r} is not supported (supported: {sorted(VAE_CLASSES)})")
        config_class, module_class = VAE_CLASSES[cls]
        cfg = config_class.from_diffusers(self.config("vae"), str(self.component("vae") / "config.json"))
        return VAESpec(cfg.temporal_compression, cfg.spatial_compression, module_class.causal_first_frame)

    def vae_factors(self) -> tuple[int, int]:
        """(temporal, spatial) compression (the frame rule is :meth:`vae_spec`'s ``causal_first_frame``)."""
        t, s, _ = self.vae_spec()
        return t, s

    def latent_shape(self, batch: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        """Channels-last initial-noise shape for a video of this size (from the configs, no weights)."""
        t, s, causal = self.vae_spec()
        channels = self.transformer_size("in_channels", 16)
        return (batch, latent_frames(num_frames, t, causal), height // s, width // s, channels)

    def default_size(self) -> tuple[int, int]:
        """:func:`default_size` of this folder (from the configs, no weights)."""
        return default_size(self.transformer_size("sample_size", 30), self.defaults())

    def patch_size(self) -> tuple[int, int, int]:
        p = self.transformer_size("patch_size", [1, 2, 2])
        if isinstance(p, list) and len(p) != 3:
            raise ConfigError(f"{self.component('transformer') / 'config.json'}: key 'patch_size' must be one integer "
                              f"or three, got {p!r}")
        return (1, p, p) if isinstance(p, int) else tuple(p)


def default_size(sample_size: int, defaults: Mapping | None = None) -> tuple[int, int]:
    """(height, width) to generate at when none is asked for: the folder's own ``_sana_jax`` defaults where it has
    them, else the resolution the released transformer was trained at: 704×1280 for the 720p model (its
    ``sample_size`` is 22, the latent height at 32× compression) and 480×832 for the others."""
    defaults = defaults or {}
    height, width = (704, 1280) if sample_size == 22 else (480, 832)
    return defaults.get("height") or height, defaults.get("width") or width


def frame_rule(temporal: int, temporal_patch: int = 1, causal_first_frame: bool = True) -> tuple[int, int]:
    """(step, offset): the valid frame counts are offset + step·k (:func:`check_video_size`)."""
    step = int(temporal) * temporal_patch
    return step, (1 + int(temporal) * (temporal_patch - 1) if causal_first_frame else 0)


def check_video_size(height: int, width: int, num_frames: int, temporal: int, spatial: int,
                     patch: tuple[int, int, int] = (1, 1, 1), *, causal_first_frame: bool = True) -> None:
    """Raise :class:`InputError` with the nearest valid values unless the frame count follows the VAE's rule and
    height/width are multiples of spatial·patch. The VAE makes 1 + (frames − 1)/temporal latent frames when
    ``causal_first_frame`` (Wan, LTX-2, PatchVAE) and frames/temporal otherwise (DC-AE-V), and the DiT needs a
    multiple of its temporal patch p of them: frames = 1 + temporal·(p − 1) + temporal·p·k, or temporal·p·k.
    (With p = 1, the usual case, that is 1 + temporal·k.)"""
    step, offset = frame_rule(temporal, patch[0], causal_first_frame)
    if num_frames < max(offset, 1) or (num_frames - offset) % step:
        lo, hi = nearest_valid(num_frames, step, offset)
        form = f"{offset} + {step}·k" if offset else f"a multiple of {step} ({step}·k)"
        nearest = str(lo) if lo == hi else f"{lo} or {hi}"
        raise InputError(f"--frames {num_frames}: the frame count must be {form}; nearest valid {nearest}")
    for name, size, p in (("height", height, patch[1]), ("width", width, patch[2])):
        m = spatial * p
        if size <= 0 or size % m:
            lo, hi = nearest_valid(size, m)
            raise InputError(f"--{name} {size} must be a multiple of {m}; nearest valid {lo} or {hi}")


def write_pipeline(folder: str | Path, index: Mapping, transformer, links: Mapping[str, Path]) -> Path:
    """A pipeline folder made of a trained ``transformer`` (exported in the diffusers layout) and links to another
    folder's components (``links``: name → folder, e.g. the text encoder, tokenizer, scheduler and VAE a training
    run kept); ``index`` is its ``model_index.json``. Returns ``folder``."""
    import json
    import os

    import converters

    folder = Path(folder)
    converters.export_safetensors(transformer, folder / "transformer")
    for name, target in links.items():
        link = folder / name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(Path(target).resolve(), link)
    tmp = folder / "model_index.json.tmp"
    tmp.write_text(json.dumps(dict(index), indent=2))
    tmp.replace(folder / "model_index.json")
    return folder
