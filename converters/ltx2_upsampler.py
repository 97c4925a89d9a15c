"""LTX-2 latent upsampler checkpoints: diffusers ``latent_upsampler/`` folders (``LTX2LatentUpsamplerModel``) and
the native single files (``ltx-2-spatial-upscaler-x2-1.0.safetensors``: the same key names, configuration in the
safetensors metadata). Model: ``Lightricks/LTX-2:packages/ltx-core/src/ltx_core/model/upsampler/model.py``."""

from __future__ import annotations

import json
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from converters import tables
from converters.nnx_state import abstract_model, flatten, merge
from converters.tables import CONV2D, CONV3D, Rule
from sana_jax.errors import CheckpointError, ConfigError
from sana_jax.models.ltx2_upsampler import DIFFUSERS_CLASS, LTX2LatentUpsampler, LTX2UpsamplerConfig

FAMILY = "ltx2_upsampler"
CONFIG = LTX2UpsamplerConfig
MODEL_CLASS_NAME = DIFFUSERS_CLASS
MODEL = LTX2LatentUpsampler
_MARKERS = ("initial_conv.weight", "final_conv.weight", "post_upsample_res_blocks.0.conv1.weight")


def _conv(torch: str, jax_path: str, transform) -> list[Rule]:
    return [Rule(f"{torch}.weight", f"{jax_path}.kernel", transform), Rule(f"{torch}.bias", f"{jax_path}.bias")]


def _norm(torch: str, jax_path: str) -> list[Rule]:
    return [Rule(f"{torch}.weight", f"{jax_path}.weight"), Rule(f"{torch}.bias", f"{jax_path}.bias")]


def diffusers_rules(cfg: LTX2UpsamplerConfig) -> list[Rule]:
    conv = CONV3D if cfg.dims == 3 else CONV2D
    rules = [*_conv("initial_conv", "initial_conv", conv), *_norm("initial_norm", "initial_norm"),
             *_conv("final_conv", "final_conv", conv)]
    for stage in ("res_blocks", "post_upsample_res_blocks"):
        for j in range(cfg.num_blocks_per_stage):
            for k in (1, 2):
                rules += _conv(f"{stage}.{j}.conv{k}", f"{stage}.{j}.conv{k}", conv)
                rules += _norm(f"{stage}.{j}.norm{k}", f"{stage}.{j}.norm{k}")
    if cfg.rational:
        rules += [*_conv("upsampler.conv", "upsampler", CONV2D), Rule("upsampler.blur_down.kernel", "blur_kernel")]
    else:
        rules += _conv("upsampler.0", "upsampler", CONV3D if cfg.temporal_upsample else CONV2D)
    return rules


def detect(keys) -> bool:
    return set(_MARKERS) <= set(keys)


def config_from_checkpoint(source: Mapping, where: str) -> LTX2UpsamplerConfig:
    """A native file's metadata ``config`` (ltx-core names), else the configuration implied by the keys and shapes."""
    raw = getattr(source, "metadata", {}) or {}
    if "config" in raw:
        try:
            config = json.loads(raw["config"])
        except (TypeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{where}: the safetensors metadata 'config' is not JSON ({e})") from e
        return LTX2UpsamplerConfig.from_native(config, f"{where} metadata")
    if not detect(source):
        raise CheckpointError(f"{where}: not an LTX-2 latent upsampler (needs {', '.join(_MARKERS)})")
    shape = tables._shape_of
    in_ch, mid = shape(source, "initial_conv.weight")[:2][::-1]
    dims = len(shape(source, "initial_conv.weight")) - 2
    blocks = len({k.split(".")[1] for k in source if k.startswith("res_blocks.")})
    if "upsampler.conv.weight" in source:
        ratio = shape(source, "upsampler.conv.weight")[0] // mid
        num = {4: 2, 9: 3, 16: 4}.get(ratio)
        if num is None:
            raise ConfigError(f"{where}: rational upsampler conv widens ×{ratio}, not a square of 2, 3 or 4; "
                              "pass config=")
        if num == 3:
            raise ConfigError(f"{where}: a ×3 rational upsampler is ×1.5 or ×0.75 depending on its blur stride, "
                              "which the weights do not tell; pass config=")
        return LTX2UpsamplerConfig(in_channels=in_ch, mid_channels=mid, num_blocks_per_stage=blocks, dims=dims,
                                   rational_spatial_scale=float(num), use_rational_resampler=True)
    up = shape(source, "upsampler.0.weight")
    spatial, temporal = {(2, 4): (True, False), (3, 2): (False, True), (3, 8): (True, True)}.get(
        (len(up) - 2, up[0] // mid), (None, None))
    if spatial is None:
        raise ConfigError(f"{where}: cannot tell the upsampler kind from upsampler.0.weight {up}; pass config=")
    return LTX2UpsamplerConfig(in_channels=in_ch, mid_channels=mid, num_blocks_per_stage=blocks, dims=dims,
                               spatial_upsample=spatial, temporal_upsample=temporal, use_rational_resampler=temporal)


def abstract(config: LTX2UpsamplerConfig, dtype=jnp.float32):
    return abstract_model(lambda: LTX2LatentUpsampler(config, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0)))


def load(source: Mapping, config: LTX2UpsamplerConfig, *, where: str, dtype=None, progress=None
         ) -> LTX2LatentUpsampler:
    """Build an :class:`LTX2LatentUpsampler`; every key must be consumed (the blur kernel stays float32)."""
    if not detect(source):
        raise CheckpointError(f"{where}: not an LTX-2 latent upsampler (needs {', '.join(_MARKERS)})")
    dtype = jnp.dtype(dtype) if dtype is not None else tables.checkpoint_dtype(source, "initial_conv.weight")
    graphdef, state, targets = abstract(config, dtype)
    if "blur_kernel" in targets:
        targets = {**targets, "blur_kernel": (targets["blur_kernel"][0], np.dtype(np.float32))}
    rules = diffusers_rules(config)
    if progress is not None:
        progress.reset(total=tables.count_tensors(rules, source))
    flat = tables.load_params(rules, targets, source, where, place=lambda _p, a: jax.device_put(a),
                              progress=progress)
    return merge(graphdef, state, flat)


def expected_tensors(config: LTX2UpsamplerConfig) -> dict[str, tuple[int, ...]]:
    return tables.expected_tensors(diffusers_rules(config), abstract(config)[2])


def export(model: LTX2LatentUpsampler) -> dict[str, np.ndarray]:
    state = flatten(nnx.to_pure_dict(nnx.state(model)))
    return tables.export_tensors(diffusers_rules(model.config), {k: np.asarray(v) for k, v in state.items()})
