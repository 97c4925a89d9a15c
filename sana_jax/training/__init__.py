"""Training: the flow-matching objective, the trainer (optax, EMA, bf16, remat, sharding, orbax resume), the
latent/text cache, and the 2K adaptation recipe.

The names below are imported on first use, so that :mod:`sana_jax.training.config` (the settings and the values
they take, read by the command line to build its parser) loads without JAX.
"""

import importlib

_HOMES = {"LatentDataset": "data", "build_cache": "data", "cache_video_folder": "data",
          "flow_matching_loss": "flow", "sample_sigmas": "flow", "TrainConfig": "config", "Trainer": "trainer"}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
