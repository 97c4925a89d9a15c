"""PyTorch checkpoints → JAX parameters, and back.

``converters.load(path)`` detects the format (diffusers folder, safetensors, original ``.pth``, our orbax
folders) and the model family, and returns the NNX module; see :mod:`converters.loader`. ``converters.resolve``
turns a Hub id (``org/name``) into its folder in the Hugging Face cache (:mod:`converters.hub`).
"""

from converters.hub import resolve
from converters.loader import (export_safetensors, load, load_orbax, open_checkpoint, register, save_orbax,
                               weights_file)
from sana_jax.errors import CheckpointError, ConfigError

__all__ = ["load", "load_orbax", "save_orbax", "export_safetensors", "open_checkpoint", "register", "resolve",
           "weights_file", "CheckpointError", "ConfigError"]
