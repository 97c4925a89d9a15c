"""The 2K recipe's adaptation (SANA-Video paper, "Bet Small to Win Big"): move a SANA-Video DiT to another VAE's
latent space by re-initialising exactly the patch embedding and the final projection for the new channel count
(and patch size), keeping every other weight, then fine-tuning.

:data:`REINITIALISED` names the parameters that are drawn fresh (with the same initialisers a new model uses);
everything else is copied from the source model, so at step 0 all other weights equal the source checkpoint's.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from sana_jax.errors import ConfigError
from sana_jax.models.sana_video import SanaVideoTransformer

#: The layers the recipe re-initialises (parameter-name prefixes of :class:`SanaVideoTransformer`).
REINITIALISED = ("patch_embedding_kernel", "patch_embedding_bias", "proj_out.kernel", "proj_out.bias")


def adapt_transformer(source: SanaVideoTransformer, *, channels: int, patch_size=None, seed: int = 0
                      ) -> SanaVideoTransformer:
    """A copy of ``source`` whose input/output layers take ``channels`` latent channels (and ``patch_size`` if
    given, e.g. ``(1, 1, 1)`` for the 32× LTX-2 VAE); those layers are freshly initialised from ``seed``."""
    cfg = source.config
    patch = cfg.patch_size if patch_size is None else patch_size
    try:
        new_cfg = dataclasses.replace(cfg, in_channels=channels, out_channels=channels, patch_size=patch)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot adapt to {channels} channels, patch {patch}: {e}") from e
    dtype = source.proj_out.kernel[...].dtype
    fresh = nnx.eval_shape(lambda: type(source)(new_cfg, dtype=source.dtype, param_dtype=dtype,  # preconditioned too
                                                rngs=nnx.Rngs(seed)))
    # Only the re-initialised layers are materialised from a new model's initialisers (cheap: a few small tensors).
    new_layers = _init_layers(new_cfg, dtype, seed)
    graphdef, state = nnx.split(fresh)
    source_vars = dict(nnx.to_flat_state(nnx.state(source)))
    flat = nnx.to_flat_state(state)
    for path, var in flat:
        name = ".".join(str(p) for p in path)
        var.set_value(new_layers[name] if name in new_layers else source_vars[path].get_value())
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _init_layers(cfg, param_dtype, seed: int) -> dict[str, jax.Array]:
    """The four re-initialised tensors, with the initialisers :class:`SanaVideoTransformer` uses for them."""
    pt, ph, pw = cfg.patch_size
    d = cfg.inner_dim
    k1, k2 = jax.random.split(jax.random.key(seed))
    patch = nnx.initializers.lecun_normal(in_axis=(0, 1, 2, 3), out_axis=4)(k1, (pt, ph, pw, cfg.in_channels, d),
                                                                           param_dtype)
    proj = nnx.initializers.lecun_normal()(k2, (d, pt * ph * pw * cfg.out_channels), param_dtype)
    return {"patch_embedding_kernel": patch, "patch_embedding_bias": jnp.zeros((d,), param_dtype),
            "proj_out.kernel": proj, "proj_out.bias": jnp.zeros((proj.shape[1],), param_dtype)}
