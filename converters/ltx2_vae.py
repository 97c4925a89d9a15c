"""LTX-2 video VAE checkpoints: diffusers ``AutoencoderKLLTX2Video`` folders and native LTX-2 single files.

Renames after ``LTX_2_0_VIDEO_VAE_RENAME_DICT`` in ``huggingface/diffusers:scripts/convert_ltx2_to_diffusers.py``:
the native layout (keys under ``vae.``, blocks numbered as one flat list, ``per_channel_statistics``) is presented
under diffusers names by prefix renames built from the configuration, so one table maps both onto the JAX
parameters. Native statistics other than the two the model uses (``channel``, ``mean-of-stds`` …) are dropped, as
diffusers' converter does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import jax.numpy as jnp
from flax import nnx

from converters import tables
from converters.nnx_state import abstract_model
from converters.tables import CONV3D, LINEAR, Rename, Rule
from sana_jax.errors import CheckpointError, ConfigError
from sana_jax.vae.ltx2 import DIFFUSERS_CLASS
from sana_jax.vae.ltx2 import LTX2VAE, LTX2VAEConfig

FAMILY = "ltx2_vae"
CONFIG = LTX2VAEConfig
MODEL_CLASS_NAME = DIFFUSERS_CLASS
MODEL = LTX2VAE
NATIVE_PREFIX = "vae."


def _conv(torch: str, jax_path: str) -> list[Rule]:
    return [Rule(f"{torch}.conv.weight", f"{jax_path}.kernel", CONV3D), Rule(f"{torch}.conv.bias", f"{jax_path}.bias")]


def _resnets(torch: str, jax_path: str, n: int, tc: bool) -> list[Rule]:
    rules = []
    for j in range(n):
        for conv in ("conv1", "conv2"):
            rules += _conv(f"{torch}.resnets.{j}.{conv}", f"{jax_path}.resnets.{j}.{conv}")
        if tc:
            rules.append(Rule(f"{torch}.resnets.{j}.scale_shift_table", f"{jax_path}.resnets.{j}.scale_shift_table"))
    return rules


def _time_embedder(torch: str, jax_path: str) -> list[Rule]:
    return [r for k in (1, 2) for r in (
        Rule(f"{torch}.timestep_embedder.linear_{k}.weight", f"{jax_path}.linear_{k}.kernel", LINEAR),
        Rule(f"{torch}.timestep_embedder.linear_{k}.bias", f"{jax_path}.linear_{k}.bias"))]


def diffusers_rules(cfg: LTX2VAEConfig) -> list[Rule]:
    """diffusers ``AutoencoderKLLTX2Video`` state dict → JAX parameter paths, for this configuration."""
    tc = cfg.timestep_conditioning
    rules = [Rule("latents_mean", "latents_mean"), Rule("latents_std", "latents_std"),
             *_conv("encoder.conv_in", "encoder.conv_in"), *_conv("encoder.conv_out", "encoder.conv_out"),
             *_resnets("encoder.mid_block", "encoder.mid_block", cfg.layers_per_block[-1], False),
             *_conv("decoder.conv_in", "decoder.conv_in"), *_conv("decoder.conv_out", "decoder.conv_out"),
             *_resnets("decoder.mid_block", "decoder.mid_block", cfg.decoder_layers_per_block[-1], tc)]
    for i, n in enumerate(cfg.layers_per_block[:-1]):
        rules += _resnets(f"encoder.down_blocks.{i}", f"encoder.down_blocks.{i}", n, False)
        rules += _conv(f"encoder.down_blocks.{i}.downsamplers.0.conv", f"encoder.down_blocks.{i}.downsampler.conv")
    up_layers = tuple(reversed(cfg.decoder_layers_per_block))[1:]
    for i, n in enumerate(up_layers):
        rules += _conv(f"decoder.up_blocks.{i}.upsamplers.0.conv", f"decoder.upsamplers.{i}.conv")
        rules += _resnets(f"decoder.up_blocks.{i}", f"decoder.up_groups.{i}", n, tc)
        if tc:
            rules += _time_embedder(f"decoder.up_blocks.{i}.time_embedder", f"decoder.up_groups.{i}.time_embedder")
    if tc:
        rules += [*_time_embedder("decoder.mid_block.time_embedder", "decoder.mid_block.time_embedder"),
                  *_time_embedder("decoder.time_embedder", "decoder.time_embedder"),
                  Rule("decoder.scale_shift_table", "decoder.scale_shift_table"),
                  Rule("decoder.timestep_scale_multiplier", "decoder.timestep_scale_multiplier")]
    return rules


def native_renames(cfg: LTX2VAEConfig, prefix: str = NATIVE_PREFIX) -> list[Rename]:
    """Native ltx-core names (``vae.encoder.down_blocks.{0..8}`` …) → diffusers names (as diffusers'
    ``convert_ltx2_to_diffusers.py`` renames them)."""
    e, d = f"{prefix}encoder.", f"{prefix}decoder."
    stats = f"{prefix}per_channel_statistics."
    renames = [Rename(f"{stats}mean-of-means", "latents_mean"), Rename(f"{stats}std-of-means", "latents_std"),
               Rename(stats, None, prefix=True),
               Rename(f"{e}conv_in.", "encoder.conv_in.", prefix=True),
               Rename(f"{e}conv_out.", "encoder.conv_out.", prefix=True),
               Rename(f"{d}conv_in.", "decoder.conv_in.", prefix=True),
               Rename(f"{d}conv_out.", "decoder.conv_out.", prefix=True),
               Rename(f"{d}timestep_scale_multiplier", "decoder.timestep_scale_multiplier"),
               Rename(f"{d}last_time_embedder.", "decoder.time_embedder.", prefix=True),
               Rename(f"{d}last_scale_shift_table", "decoder.scale_shift_table")]
    n_down = len(cfg.layers_per_block) - 1
    for k in range(n_down):
        renames += [Rename(f"{e}down_blocks.{2 * k}.res_blocks.", f"encoder.down_blocks.{k}.resnets.", prefix=True),
                    Rename(f"{e}down_blocks.{2 * k + 1}.", f"encoder.down_blocks.{k}.downsamplers.0.", prefix=True)]
    renames.append(Rename(f"{e}down_blocks.{2 * n_down}.res_blocks.", "encoder.mid_block.resnets.", prefix=True))
    renames += [Rename(f"{d}up_blocks.0.res_blocks.", "decoder.mid_block.resnets.", prefix=True),
                Rename(f"{d}up_blocks.0.time_embedder.", "decoder.mid_block.time_embedder.", prefix=True)]
    for k in range(len(cfg.decoder_block_out_channels)):
        renames += [Rename(f"{d}up_blocks.{2 * k + 1}.", f"decoder.up_blocks.{k}.upsamplers.0.", prefix=True),
                    Rename(f"{d}up_blocks.{2 * k + 2}.res_blocks.", f"decoder.up_blocks.{k}.resnets.", prefix=True),
                    Rename(f"{d}up_blocks.{2 * k + 2}.time_embedder.", f"decoder.up_blocks.{k}.time_embedder.",
                           prefix=True)]
    return renames


def is_diffusers_layout(keys) -> bool:
    keys = set(keys)
    return "encoder.conv_in.conv.weight" in keys and "latents_mean" in keys


def is_native_layout(keys, prefix: str = NATIVE_PREFIX) -> bool:
    keys = set(keys)
    return f"{prefix}encoder.conv_in.conv.weight" in keys or f"{prefix}decoder.conv_in.conv.weight" in keys


def detect(keys) -> bool:
    return is_diffusers_layout(keys) or is_native_layout(keys)


def config_from_checkpoint(source: Mapping, where: str) -> LTX2VAEConfig:
    """No config.json: a native file carries its configuration in the safetensors metadata."""
    if is_native_layout(source):
        return native_config(getattr(source, "metadata", {}), where)
    raise ConfigError(f"{where}: a diffusers-layout LTX-2 VAE file needs its config.json beside it or config=")


def native_config(metadata: Mapping[str, str], where: str) -> LTX2VAEConfig:
    """The VAE configuration stored in a native checkpoint's safetensors metadata (``config`` JSON, ``vae`` key)."""
    try:
        config = json.loads(metadata["config"])
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{where}: no LTX-2 'config' JSON in the safetensors metadata; pass config=") from e
    return LTX2VAEConfig.from_native(config.get("vae", {}), f"{where} metadata")


def abstract(config: LTX2VAEConfig, dtype=jnp.float32):
    return abstract_model(lambda: LTX2VAE(config, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0)))


def as_diffusers(source: Mapping, cfg: LTX2VAEConfig, where: str) -> Mapping:
    if is_native_layout(source):
        renamed = tables.RenamedSource(source, native_renames(cfg), where)
        # a native single file also holds the transformer, audio VAE, vocoder …: keep only the video VAE's keys
        # (an unmapped ``vae.*`` key stays in, so it is reported as unexpected)
        return tables.Subset(renamed, [k for k in renamed if k.startswith(("encoder.", "decoder.", NATIVE_PREFIX))
                                 or k in ("latents_mean", "latents_std")])
    if is_diffusers_layout(source):
        return source
    raise CheckpointError(f"{where}: not an LTX-2 video VAE checkpoint (no 'encoder.conv_in.conv.weight' or "
                          f"'{NATIVE_PREFIX}encoder.conv_in.conv.weight')")


def load(source: Mapping, config: LTX2VAEConfig, *, where: str, dtype=None, progress=None) -> LTX2VAE:
    """Build an :class:`LTX2VAE` from a checkpoint in either layout; every VAE key must be consumed."""
    source = as_diffusers(source, config, where)
    return tables.load_module(diffusers_rules(config), abstract, config, source, where=where, dtype=dtype,
                              dtype_key="encoder.conv_in.conv.weight",
                              progress=progress)


def expected_tensors(config: LTX2VAEConfig) -> dict[str, tuple[int, ...]]:
    return tables.expected_tensors(diffusers_rules(config), abstract(config)[2])


def export(model: LTX2VAE) -> dict:
    """The model's tensors (weights and latent statistics) as a diffusers ``AutoencoderKLLTX2Video`` state dict."""
    return tables.export_module(diffusers_rules(model.config), model)
