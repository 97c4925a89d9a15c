"""The embedded default model's VAE (:class:`sana_jax.vae.patch.PatchVAE`): its own layout, the JAX parameter
names themselves (``encoder.proj_in.kernel`` …), so the table is the identity. Its ``config.json`` is required
(``latents_mean``/``latents_std`` cannot be read from the weights)."""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from converters import tables
from converters.nnx_state import abstract_model, flat_params
from converters.tables import Rule
from sana_jax.errors import CheckpointError, ConfigError
from sana_jax.vae.patch import CLASS_NAME, PatchVAE, PatchVAEConfig

FAMILY = "patch_vae"
CONFIG = PatchVAEConfig
MODEL_CLASS_NAME = CLASS_NAME
MODEL = PatchVAE
_MARKERS = ("encoder.proj_in.kernel", "decoder.proj_out.kernel")


def detect(keys) -> bool:
    return all(k in keys for k in _MARKERS)


def abstract(config: PatchVAEConfig, dtype=jnp.float32):
    return abstract_model(lambda: PatchVAE(config, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0)))


def rules(config: PatchVAEConfig) -> list[Rule]:
    return [Rule(name, name) for name in abstract(config)[2]]


def config_from_checkpoint(source: Mapping, where: str) -> PatchVAEConfig:
    raise ConfigError(f"{where}: a {CLASS_NAME} needs its config.json (latent statistics are not in the weights)")


def load(source: Mapping, config: PatchVAEConfig, *, where: str, dtype=None, progress=None) -> PatchVAE:
    if not detect(source):
        raise CheckpointError(f"{where}: not a {CLASS_NAME} checkpoint (needs {', '.join(_MARKERS)})")
    return tables.load_module(rules(config), abstract, config, source, where=where, dtype=dtype,
                              dtype_key=_MARKERS[0], progress=progress)


def expected_tensors(config: PatchVAEConfig) -> dict[str, tuple[int, ...]]:
    return {k: v[0] for k, v in abstract(config)[2].items()}


def export(model: PatchVAE) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in flat_params(model).items()}
