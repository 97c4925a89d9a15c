"""Wan2.1 VAE checkpoints: diffusers ``AutoencoderKLWan`` and the original Wan ``.pth`` (``Wan2.1_VAE.pth``).

References: ``huggingface/diffusers:src/diffusers/models/autoencoders/autoencoder_kl_wan.py``,
``Wan-Video/Wan2.1:wan/modules/vae.py``. The JAX parameter tree mirrors diffusers' names, so :func:`diffusers_rules`
is a rename + layout table; the original ``WanVAE_`` state dict is first presented under diffusers names
(:func:`original_renames`, after diffusers' ``scripts/convert_wan_to_diffusers.py`` ``convert_vae``). Both tables
depend on the configuration (block indices), so they are built from it. ``latents_mean``/``latents_std`` are config
values, not tensors.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from converters import tables
from converters.nnx_state import abstract_model, flat_params
from converters.tables import CONV2D, CONV3D, Rename, Rule, Transform
from sana_jax.errors import CheckpointError, ConfigError
from sana_jax.vae.wan import DIFFUSERS_CLASS, WAN21_LATENTS_MEAN, WAN21_LATENTS_STD, WanVAE, WanVAEConfig

FAMILY = "wan_vae"
CONFIG = WanVAEConfig
MODEL_CLASS_NAME = DIFFUSERS_CLASS
MODEL = WanVAE

POINTWISE3D = Transform("conv1x1x1", permute=(1, 0), squeeze=(2, 3, 4))  # (O, I, 1, 1, 1) → (I, O)
POINTWISE2D = Transform("conv1x1", permute=(1, 0), squeeze=(2, 3))  # (O, I, 1, 1) → (I, O)
GAMMA3D = Transform("gamma3d", squeeze=(1, 2, 3))  # (C, 1, 1, 1) → (C,)
GAMMA2D = Transform("gamma2d", squeeze=(1, 2))  # (C, 1, 1) → (C,)


def _conv(torch: str, jax_path: str, transform: Transform = CONV3D) -> list[Rule]:
    return [Rule(f"{torch}.weight", f"{jax_path}.kernel", transform), Rule(f"{torch}.bias", f"{jax_path}.bias")]


def _resnet(t: str, j: str, cin: int, cout: int) -> list[Rule]:
    rules = [Rule(f"{t}.norm1.gamma", f"{j}.norm1.gamma", GAMMA3D), *_conv(f"{t}.conv1", f"{j}.conv1"),
             Rule(f"{t}.norm2.gamma", f"{j}.norm2.gamma", GAMMA3D), *_conv(f"{t}.conv2", f"{j}.conv2")]
    if cin != cout:
        rules += _conv(f"{t}.conv_shortcut", f"{j}.conv_shortcut", POINTWISE3D)
    return rules


def _mid(t: str, j: str, dim: int) -> list[Rule]:
    a, ja = f"{t}.attentions.0", f"{j}.attentions.0"
    return [*_resnet(f"{t}.resnets.0", f"{j}.resnets.0", dim, dim),
            Rule(f"{a}.norm.gamma", f"{ja}.norm.gamma", GAMMA2D),
            *_conv(f"{a}.to_qkv", f"{ja}.to_qkv", POINTWISE2D), *_conv(f"{a}.proj", f"{ja}.proj", POINTWISE2D),
            *_resnet(f"{t}.resnets.1", f"{j}.resnets.1", dim, dim)]


def _resample(t: str, j: str, temporal: bool) -> list[Rule]:
    rules = _conv(f"{t}.resample.1", f"{j}.resample", CONV2D)
    return rules + (_conv(f"{t}.time_conv", f"{j}.time_conv") if temporal else [])


def diffusers_rules(cfg: WanVAEConfig) -> list[Rule]:
    """diffusers ``AutoencoderKLWan`` state dict → JAX parameters of :class:`WanVAE` with ``cfg``."""
    rules = [*_conv("encoder.conv_in", "encoder.conv_in")]
    dims = [cfg.base_dim * u for u in (1, *cfg.dim_mult)]
    n = 0
    for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
        for _ in range(cfg.num_res_blocks):
            rules += _resnet(f"encoder.down_blocks.{n}", f"encoder.down_blocks.{n}", cin, cout)
            cin, n = cout, n + 1
        if i != len(cfg.dim_mult) - 1:
            rules += _resample(f"encoder.down_blocks.{n}", f"encoder.down_blocks.{n}", cfg.temperal_downsample[i])
            n += 1
    rules += [*_mid("encoder.mid_block", "encoder.mid_block", dims[-1]),
              Rule("encoder.norm_out.gamma", "encoder.norm_out.gamma", GAMMA3D),
              *_conv("encoder.conv_out", "encoder.conv_out"),
              *_conv("quant_conv", "quant_conv", POINTWISE3D),
              *_conv("post_quant_conv", "post_quant_conv", POINTWISE3D),
              *_conv("decoder.conv_in", "decoder.conv_in")]
    mult = cfg.dim_mult
    dims = [cfg.dec_dim * u for u in (mult[-1], *mult[::-1])]
    rules += _mid("decoder.mid_block", "decoder.mid_block", dims[0])
    temporal_up = cfg.temperal_downsample[::-1]
    for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
        cin = cin // 2 if i > 0 else cin
        t = f"decoder.up_blocks.{i}"
        for r in range(cfg.num_res_blocks + 1):
            rules += _resnet(f"{t}.resnets.{r}", f"{t}.resnets.{r}", cin, cout)
            cin = cout
        if i != len(mult) - 1:
            rules += _resample(f"{t}.upsamplers.0", f"{t}.upsampler", temporal_up[i])
    rules += [Rule("decoder.norm_out.gamma", "decoder.norm_out.gamma", GAMMA3D),
              *_conv("decoder.conv_out", "decoder.conv_out")]
    return rules


def _residual_renames(src: str, dst: str) -> list[Rename]:
    """Original ``ResidualBlock`` (``residual`` = norm, SiLU, conv, norm, SiLU, dropout, conv; ``shortcut``)."""
    out = [Rename(f"{src}.residual.0.gamma", f"{dst}.norm1.gamma"),
           Rename(f"{src}.residual.3.gamma", f"{dst}.norm2.gamma")]
    for p in ("weight", "bias"):
        out += [Rename(f"{src}.residual.2.{p}", f"{dst}.conv1.{p}"),
                Rename(f"{src}.residual.6.{p}", f"{dst}.conv2.{p}"),
                Rename(f"{src}.shortcut.{p}", f"{dst}.conv_shortcut.{p}")]
    return out


def _pair(src: str, dst: str) -> list[Rename]:
    return [Rename(f"{src}.weight", f"{dst}.weight"), Rename(f"{src}.bias", f"{dst}.bias")]


def original_renames(cfg: WanVAEConfig) -> list[Rename]:
    """Original Wan ``WanVAE_`` state-dict names → diffusers names
    (``huggingface/diffusers:scripts/convert_wan_to_diffusers.py``)."""
    out = [*_pair("encoder.conv1", "encoder.conv_in"), *_pair("decoder.conv1", "decoder.conv_in"),
           *_pair("conv1", "quant_conv"), *_pair("conv2", "post_quant_conv"),
           *_residual_renames("encoder.downsamples.{i}", "encoder.down_blocks.{i}"),
           *_pair("encoder.downsamples.{i}.resample.1", "encoder.down_blocks.{i}.resample.1"),
           *_pair("encoder.downsamples.{i}.time_conv", "encoder.down_blocks.{i}.time_conv")]
    for part in ("encoder", "decoder"):
        out += [*_residual_renames(f"{part}.middle.0", f"{part}.mid_block.resnets.0"),
                *_residual_renames(f"{part}.middle.2", f"{part}.mid_block.resnets.1"),
                Rename(f"{part}.middle.1.norm.gamma", f"{part}.mid_block.attentions.0.norm.gamma"),
                *_pair(f"{part}.middle.1.to_qkv", f"{part}.mid_block.attentions.0.to_qkv"),
                *_pair(f"{part}.middle.1.proj", f"{part}.mid_block.attentions.0.proj"),
                Rename(f"{part}.head.0.gamma", f"{part}.norm_out.gamma"),
                *_pair(f"{part}.head.2", f"{part}.conv_out")]
    # decoder.upsamples is flat: per stage num_res_blocks + 1 residual blocks, then the upsampler (not after the last)
    k = 0
    for i in range(len(cfg.dim_mult)):
        for r in range(cfg.num_res_blocks + 1):
            out += _residual_renames(f"decoder.upsamples.{k}", f"decoder.up_blocks.{i}.resnets.{r}")
            k += 1
        if i != len(cfg.dim_mult) - 1:
            out += [*_pair(f"decoder.upsamples.{k}.resample.1", f"decoder.up_blocks.{i}.upsamplers.0.resample.1"),
                    *_pair(f"decoder.upsamples.{k}.time_conv", f"decoder.up_blocks.{i}.upsamplers.0.time_conv")]
            k += 1
    return out


def is_diffusers_layout(keys) -> bool:
    keys = set(keys)
    return "encoder.conv_in.weight" in keys and "post_quant_conv.weight" in keys


def is_original_layout(keys) -> bool:
    keys = set(keys)
    return ("encoder.conv1.weight" in keys and "encoder.downsamples.0.residual.0.gamma" in keys
            and "conv2.weight" in keys)


def as_diffusers(source: Mapping, config: WanVAEConfig, where: str) -> Mapping:
    """The checkpoint under diffusers names, whichever of the two layouts it is in."""
    if is_original_layout(source):
        return tables.RenamedSource(source, original_renames(config), where)
    if is_diffusers_layout(source):
        return source
    raise CheckpointError(f"{where}: not a Wan VAE checkpoint (found neither 'encoder.conv_in.weight' (diffusers) "
                          "nor 'encoder.conv1.weight' (original Wan .pth))")


def detect(keys) -> bool:
    return is_diffusers_layout(keys) or is_original_layout(keys)


def config_from_checkpoint(source: Mapping, where: str) -> WanVAEConfig:
    return config_from_shapes(source, where)


def config_from_shapes(source: Mapping, where: str) -> WanVAEConfig:
    """Infer the configuration from tensor shapes (either layout). ``latents_mean/std`` are not in the weights:
    Wan2.1's are used for 16 latent channels; other widths need the model's ``config.json``."""
    original = is_original_layout(source)
    if original:  # the structure-independent renames are enough to read the shapes below
        source = tables.RenamedSource(source, original_renames(WanVAEConfig()), where)
    elif not is_diffusers_layout(source):
        as_diffusers(source, WanVAEConfig(), where)
    shape = source.shape if hasattr(source, "shape") else (lambda n: np.shape(source[n]))
    base, cin = shape("encoder.conv_in.weight")[:2]
    z = shape("post_quant_conv.weight")[0]
    out_ch, dec_base = shape("decoder.conv_out.weight")[:2]
    down = sorted({int(k.split(".")[2]) for k in source if k.startswith("encoder.down_blocks.")})
    widths, temporal, nres, run = [], [], [], 0
    for n in down:
        if f"encoder.down_blocks.{n}.resample.1.weight" in source:
            temporal.append(f"encoder.down_blocks.{n}.time_conv.weight" in source)
            nres.append(run)
            run = 0
        else:
            widths.append(shape(f"encoder.down_blocks.{n}.conv1.weight")[0])
            run += 1
    nres.append(run)
    if len(set(nres)) != 1 or not widths or any(w % base for w in widths):
        raise ConfigError(f"{where}: cannot infer the Wan VAE structure from its shapes; pass its config.json")
    mult = tuple(w // base for w in widths[::nres[0]])
    if z != len(WAN21_LATENTS_MEAN):
        raise ConfigError(f"{where}: {z} latent channels; latents_mean/std are only known for Wan2.1 (16): "
                          "pass the model's config.json")
    return WanVAEConfig(base_dim=base, z_dim=z, dim_mult=mult, num_res_blocks=nres[0], temperal_downsample=temporal,
                        latents_mean=WAN21_LATENTS_MEAN, latents_std=WAN21_LATENTS_STD,
                        decoder_base_dim=None if dec_base == base else dec_base, in_channels=cin,
                        out_channels=out_ch)


def abstract(config: WanVAEConfig, dtype=jnp.float32):
    """``(graphdef, abstract_state, targets)`` of a :class:`WanVAE` with ``config``; allocates nothing."""
    return abstract_model(lambda: WanVAE(config, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0)))


def load(source: Mapping, config: WanVAEConfig, *, where: str, dtype=None, progress=None) -> WanVAE:
    """Build a :class:`WanVAE` from a checkpoint in either layout; every key must be consumed."""
    source = as_diffusers(source, config, where)
    return tables.load_module(diffusers_rules(config), abstract, config, source, where=where, dtype=dtype,
                              dtype_key="encoder.conv_in.weight", progress=progress)


def expected_tensors(config: WanVAEConfig) -> dict[str, tuple[int, ...]]:
    """diffusers state-dict names and shapes of a model with ``config`` (no memory allocated)."""
    return tables.expected_tensors(diffusers_rules(config), abstract(config)[2])


def export(model: WanVAE) -> dict[str, np.ndarray]:
    """The model's parameters as a diffusers ``AutoencoderKLWan`` state dict (numpy)."""
    return tables.export_tensors(diffusers_rules(model.config),
                                 {k: np.asarray(v) for k, v in flat_params(model).items()})


__all__ = ["FAMILY", "CONFIG", "MODEL", "MODEL_CLASS_NAME", "detect", "config_from_checkpoint", "abstract",
           "as_diffusers", "config_from_shapes", "diffusers_rules", "expected_tensors", "export",
           "is_diffusers_layout", "is_original_layout", "load", "original_renames"]
