"""PyTorch checkpoints → JAX parameters, and back.

``converters.load(path)`` detects the format (diffusers folder, safetensors, original ``.pth``, our orbax
folders) and the model family, and returns the NNX module; see :mod:`converters.loader`.
"""

from converters.loader import export_safetensors, load, load_orbax, open_checkpoint, register, save_orbax
from sana_jax.errors import CheckpointError, ConfigError

__all__ = ["load", "load_orbax", "save_orbax", "export_safetensors", "open_checkpoint", "register", "CheckpointError",
           "ConfigError"]
