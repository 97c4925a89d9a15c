"""Reading a diffusers pipeline folder, and checking a requested video size before any model is loaded."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from sana_jax.errors import CheckpointError, ConfigError, InputError
from sana_jax.vae.common import nearest_valid

#: VAE class → (temporal, spatial) compression, as the pipelines need it before loading weights.
VAE_FACTORS = {"AutoencoderKLWan": (4, 8), "AutoencoderKLLTX2Video": (8, 32)}


@dataclasses.dataclass(frozen=True)
class PipelineFolder:
    """The components of a diffusers pipeline folder (``model_index.json`` + one subfolder per component)."""

    root: Path
    index: dict

    @classmethod
    def open(cls, root: str | Path) -> "PipelineFolder":
        root = Path(root)
        path = root / "model_index.json"
        if not path.is_file():
            raise CheckpointError(f"{root}: not a diffusers pipeline folder (no model_index.json)")
        try:
            index = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: unreadable ({e})") from e
        return cls(root, index)

    def component(self, name: str) -> Path:
        """The subfolder of component ``name``; the error names the folder it looked in."""
        entry = self.index.get(name)
        if not entry or entry[0] is None:
            raise CheckpointError(f"{self.root / 'model_index.json'} lists no {name!r} component")
        folder = self.root / name
        if not folder.is_dir():
            raise CheckpointError(f"missing component {name!r}: no folder {folder}")
        return folder

    def class_name(self, name: str) -> str:
        entry = self.index.get(name)
        return entry[1] if entry else ""

    def config(self, name: str, file: str = "config.json") -> dict:
        path = self.component(name) / file
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: cannot read ({e})") from e

    def vae_factors(self) -> tuple[int, int]:
        cls = self.class_name("vae")
        if cls not in VAE_FACTORS:
            raise ConfigError(f"{self.root}: VAE class {cls!r} is not supported (supported: {sorted(VAE_FACTORS)})")
        if cls == "AutoencoderKLLTX2Video":
            cfg = self.config("vae")
            downs = cfg.get("downsample_type", ["spatial", "temporal", "spatiotemporal", "spatiotemporal"])
            t = 2 ** sum(d in ("temporal", "spatiotemporal") for d in downs)
            s = cfg.get("patch_size", 4) * 2 ** sum(d in ("spatial", "spatiotemporal") for d in downs)
            return t, s
        cfg = self.config("vae")
        return cfg.get("scale_factor_temporal", 4), cfg.get("scale_factor_spatial", 8)

    def latent_shape(self, batch: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        """Channels-last initial-noise shape for a video of this size (from the configs, no weights)."""
        t, s = self.vae_factors()
        channels = self.config("transformer").get("in_channels", 16)
        return (batch, (num_frames - 1) // t + 1, height // s, width // s, channels)

    def patch_size(self) -> tuple[int, int, int]:
        p = self.config("transformer").get("patch_size", (1, 2, 2))
        return (1, p, p) if isinstance(p, int) else tuple(p)


def check_video_size(height: int, width: int, num_frames: int, temporal: int, spatial: int,
                     patch: tuple[int, int, int] = (1, 1, 1)) -> None:
    """Raise :class:`InputError` with the nearest valid values unless frames = 1 + temporal·k and height/width
    are multiples of spatial·patch."""
    if num_frames < 1 or (num_frames - 1) % (temporal * patch[0]):
        step = temporal * patch[0]
        lo, hi = nearest_valid(num_frames, step, 1)
        raise InputError(f"--frames {num_frames}: the frame count must be 1 + {step}·k; nearest valid {lo} or {hi}")
    for name, size, p in (("height", height, patch[1]), ("width", width, patch[2])):
        m = spatial * p
        if size <= 0 or size % m:
            lo, hi = nearest_valid(size, m)
            raise InputError(f"--{name} {size} must be a multiple of {m}; nearest valid {lo} or {hi}")
