"""sana-jax: SANA-Video and its two-stage 2K LTX-2 refiner in JAX/Flax NNX."""

from sana_jax.errors import CheckpointError, ConfigError, InputError, SanaJaxError

__version__ = "0.1.0"
__all__ = ["CheckpointError", "ConfigError", "InputError", "SanaJaxError", "__version__"]
