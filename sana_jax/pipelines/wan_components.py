"""The parts of a Wan2.1 model folder, in either layout, and the CausVid / Self-Forcing student checkpoints.

* diffusers (``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``): ``model_index.json`` naming ``WanPipeline``, with
  ``text_encoder/``, ``tokenizer/``, ``transformer/``, ``vae/``, ``scheduler/``;
* the original (``Wan-AI/Wan2.1-T2V-1.3B``, what CausVid and Self-Forcing expect under ``wan_models/``):
  ``config.json`` (``WanModel``), ``diffusion_pytorch_model*.safetensors``, ``models_t5_umt5-xxl-enc-bf16.pth``,
  ``Wan2.1_VAE.pth`` and the tokenizer in ``google/umt5-xxl/``
  (``Wan-Video/Wan2.1:wan/configs/wan_t2v_1_3B.py``).

A student checkpoint (``tianweiy/CausVid``: ``autoregressive_checkpoint/model.pt``; ``gdhe17/Self-Forcing``:
``checkpoints/self_forcing_dmd.pt``) holds only the DiT; the rest comes from the base folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sana_jax.config import read_json
from sana_jax.errors import CheckpointError, ConfigError
from sana_jax.sampling.schedules import Schedule, causvid_schedule, self_forcing_schedule

PIPELINE_CLASS = "WanPipeline"
#: the original folder's files (Wan-Video/Wan2.1:wan/configs/shared_config.py and wan_t2v_*.py)
ORIGINAL_TEXT_ENCODER = "models_t5_umt5-xxl-enc-bf16.pth"
ORIGINAL_VAE = "Wan2.1_VAE.pth"
ORIGINAL_TOKENIZER = "google/umt5-xxl"
#: the latent frames per chunk of the released students (``num_frame_per_block``)
STUDENT_CHUNK_FRAMES = 3
#: the per-chunk schedules of the released students
STUDENT_SCHEDULES = {"causvid": causvid_schedule, "self-forcing": self_forcing_schedule}


def is_wan_folder(root: str | Path) -> bool:
    """Whether ``root`` is a Wan2.1 folder in either layout (reads two small JSON files at most)."""
    root = Path(root)
    if (root / "model_index.json").is_file():
        return read_json(root / "model_index.json", missing={}).get("_class_name") == PIPELINE_CLASS
    return (root / "config.json").is_file() and \
        read_json(root / "config.json", missing={}).get("_class_name") == "WanModel"


@dataclasses.dataclass(frozen=True)
class WanFolder:
    """Paths of a Wan2.1 folder's parts: the text encoder, tokenizer and VAE (folders or files that
    ``converters.load`` / ``Tokenizer.from_folder`` read) and the transformer (a folder or a weights file whose
    config sits beside it). ``layout`` is ``"diffusers"`` or ``"original"``."""

    root: Path
    layout: str
    text_encoder: Path
    tokenizer: Path
    vae: Path
    transformer: Path

    @classmethod
    def open(cls, root: str | Path) -> "WanFolder":
        root = Path(root)
        if not root.is_dir():
            raise CheckpointError(f"{root}: no such folder (a Wan2.1 model folder, diffusers or original layout)")
        if (root / "model_index.json").is_file():
            name = read_json(root / "model_index.json", error=CheckpointError).get("_class_name")
            if name != PIPELINE_CLASS:
                raise ConfigError(f"{root / 'model_index.json'}: a {name} folder, not a Wan2.1 {PIPELINE_CLASS}")
            parts = {p: root / p for p in ("text_encoder", "tokenizer", "vae", "transformer")}
            layout = "diffusers"
        elif (root / "config.json").is_file():
            parts = {"text_encoder": root / ORIGINAL_TEXT_ENCODER, "tokenizer": root / ORIGINAL_TOKENIZER,
                     "vae": root / ORIGINAL_VAE, "transformer": root}
            layout = "original"
        else:
            raise CheckpointError(f"{root}: not a Wan2.1 folder (no model_index.json of a {PIPELINE_CLASS}, no "
                                  "original config.json)")
        missing = [f"{name} ({path})" for name, path in parts.items() if not path.exists()]
        if missing:
            raise CheckpointError(f"{root}: incomplete Wan2.1 folder ({layout} layout), missing {', '.join(missing)}")
        return cls(root, layout, **parts)

    def transformer_config(self) -> dict:
        """The DiT's ``config.json`` (either form; ``WanConfig.from_diffusers`` reads both)."""
        return read_json(self.transformer / "config.json", error=CheckpointError)

    def scheduler_config(self) -> dict | None:
        """``scheduler/scheduler_config.json`` of a diffusers folder; None for the original layout."""
        path = self.root / "scheduler" / "scheduler_config.json"
        return read_json(path, error=CheckpointError) if self.layout == "diffusers" and path.is_file() else None

    def load_text_encoder(self, dtype, weights: str | None = None):
        import converters

        return converters.load(self.text_encoder, dtype=dtype, weights=weights,
                               component="umt5" if self.layout == "original" else None)

    def load_tokenizer(self):
        from sana_jax.text.tokenizer import Tokenizer

        return Tokenizer.from_folder(self.tokenizer)

    def load_vae(self, dtype):
        import converters

        return converters.load(self.vae, dtype=dtype)

    def load_transformer(self, dtype, checkpoint: str | Path | None = None, weights: str | None = None):
        """The folder's DiT, or a student ``checkpoint`` (a file: CausVid / Self-Forcing ``.pt``, safetensors;
        or a folder) configured by this folder's transformer config; ``weights``: ``converters.load``'s."""
        import converters
        from sana_jax.models.wan import WanConfig

        if checkpoint is None:
            return converters.load(self.transformer, dtype=dtype, weights=weights)
        config = WanConfig.from_diffusers(self.transformer_config(), str(self.transformer / "config.json"))
        return converters.load(checkpoint, dtype=dtype, config=config, weights=weights,
                               component=None if Path(checkpoint).is_dir() else "wan_transformer")


def student_kind(checkpoint: str | Path) -> str:
    """``"self-forcing"`` for a checkpoint holding ``generator_ema`` (Self-Forcing saves it; CausVid does not),
    else ``"causvid"``: which released schedule a student runs (:data:`STUDENT_SCHEDULES`)."""
    path = Path(checkpoint)
    if path.is_file() and path.suffix in (".pt", ".pth"):
        from converters.torch_pickle import load_torch_pickle

        top = load_torch_pickle(path)
        if isinstance(top, dict) and "generator_ema" in top:
            return "self-forcing"
    return "causvid"


def student_schedule(name: str) -> Schedule:
    if name not in STUDENT_SCHEDULES:
        raise ConfigError(f"unknown student schedule {name!r}; expected one of {sorted(STUDENT_SCHEDULES)}")
    return STUDENT_SCHEDULES[name]()
