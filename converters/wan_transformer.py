"""Wan2.1 DiT checkpoints: diffusers ``WanTransformer3DModel``, the original Wan layout, and the CausVid /
Self-Forcing training checkpoints.

References: ``huggingface/diffusers:src/diffusers/models/transformers/transformer_wan.py`` (names and shapes),
``huggingface/diffusers:scripts/convert_wan_to_diffusers.py`` (original → diffusers renames),
``tianweiy/CausVid:causvid/models/wan/wan_wrapper.py`` and ``guandeh17/Self-Forcing:utils/wan_wrapper.py`` (their
generator dicts are the original names under ``model.``). The original layout is presented under diffusers names
(:data:`ORIGINAL_RENAMES`) so that one table, :data:`DIFFUSERS_RULES`, maps every layout onto the JAX parameters.

CausVid's ``model.pt`` is ``{"generator": …}``; Self-Forcing's ``{"generator", "critic", "generator_ema"}``, of which
the EMA weights are the ones its demo runs: ``converters.torch_pickle`` takes ``generator_ema`` first.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from converters import tables
from converters.nnx_state import abstract_model, flat_params
from converters.tables import CONV3D, LINEAR, Rename, Rule
from sana_jax.errors import CheckpointError
from sana_jax.models.wan import DIFFUSERS_CLASS, ORIGINAL_CLASS, WanConfig, WanTransformer

FAMILY = "wan_transformer"
CONFIG = WanConfig
MODEL_CLASS_NAME = DIFFUSERS_CLASS
MODEL_CLASS_NAMES = (DIFFUSERS_CLASS, ORIGINAL_CLASS)
MODEL = WanTransformer

#: the prefix of CausVid / Self-Forcing generator dicts (the wrapper holds the network as ``self.model``)
WRAPPER_PREFIX = "model."


def _linear(torch: str, jax_path: str) -> list[Rule]:
    return [Rule(f"{torch}.weight", f"{jax_path}.kernel", LINEAR), Rule(f"{torch}.bias", f"{jax_path}.bias")]


def _block_rules() -> list[Rule]:
    t, j = "blocks.{i}", "blocks"
    rules = [Rule(f"{t}.scale_shift_table", f"{j}.scale_shift_table"),
             Rule(f"{t}.norm2.weight", f"{j}.norm2.weight"), Rule(f"{t}.norm2.bias", f"{j}.norm2.bias"),
             *_linear(f"{t}.ffn.net.0.proj", f"{j}.ffn.proj_in"), *_linear(f"{t}.ffn.net.2", f"{j}.ffn.proj_out")]
    for attn in ("attn1", "attn2"):
        for proj in ("to_q", "to_k", "to_v"):
            rules += _linear(f"{t}.{attn}.{proj}", f"{j}.{attn}.{proj}")
        rules += _linear(f"{t}.{attn}.to_out.0", f"{j}.{attn}.to_out")
        rules += [Rule(f"{t}.{attn}.norm_q.weight", f"{j}.{attn}.norm_q.weight"),
                  Rule(f"{t}.{attn}.norm_k.weight", f"{j}.{attn}.norm_k.weight")]
    return rules


#: diffusers ``WanTransformer3DModel`` state dict → JAX parameters.
DIFFUSERS_RULES: list[Rule] = [
    Rule("patch_embedding.weight", "patch_embedding_kernel", CONV3D),
    Rule("patch_embedding.bias", "patch_embedding_bias"),
    *_linear("condition_embedder.time_embedder.linear_1", "time_embedder.linear_1"),
    *_linear("condition_embedder.time_embedder.linear_2", "time_embedder.linear_2"),
    *_linear("condition_embedder.time_proj", "time_proj"),
    *_linear("condition_embedder.text_embedder.linear_1", "text_embedder.linear_1"),
    *_linear("condition_embedder.text_embedder.linear_2", "text_embedder.linear_2"),
    Rule("scale_shift_table", "scale_shift_table"),
    *_linear("proj_out", "proj_out"),
    *_block_rules(),
]


def _pair(src: str, dst: str) -> list[Rename]:
    return [Rename(f"{src}.weight", f"{dst}.weight"), Rename(f"{src}.bias", f"{dst}.bias")]


_B = "blocks.{i}"

#: original Wan (``WanModel``) names → diffusers names (``convert_wan_to_diffusers.py``'s table). The one trap:
#: the original ``norm3`` (the affine LayerNorm before cross-attention) is diffusers' ``norm2``.
ORIGINAL_RENAMES: list[Rename] = [
    *_pair("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    *_pair("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    *_pair("time_projection.1", "condition_embedder.time_proj"),
    *_pair("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    *_pair("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    Rename("head.modulation", "scale_shift_table"),
    *_pair("head.head", "proj_out"),
    Rename(f"{_B}.modulation", f"{_B}.scale_shift_table"),
    *_pair(f"{_B}.norm3", f"{_B}.norm2"),
    *_pair(f"{_B}.ffn.0", f"{_B}.ffn.net.0.proj"),
    *_pair(f"{_B}.ffn.2", f"{_B}.ffn.net.2"),
    *[r for attn, new in (("self_attn", "attn1"), ("cross_attn", "attn2"))
      for r in (*_pair(f"{_B}.{attn}.q", f"{_B}.{new}.to_q"), *_pair(f"{_B}.{attn}.k", f"{_B}.{new}.to_k"),
                *_pair(f"{_B}.{attn}.v", f"{_B}.{new}.to_v"), *_pair(f"{_B}.{attn}.o", f"{_B}.{new}.to_out.0"),
                Rename(f"{_B}.{attn}.norm_q.weight", f"{_B}.{new}.norm_q.weight"),
                Rename(f"{_B}.{attn}.norm_k.weight", f"{_B}.{new}.norm_k.weight"))],
]


def strip_wrapper(source: Mapping) -> Mapping:
    """A CausVid / Self-Forcing generator dict (every key under ``model.``) under the plain original names."""
    keys = list(source)
    if keys and all(k.startswith(WRAPPER_PREFIX) for k in keys):
        return tables.RenamedSource(source, [Rename(WRAPPER_PREFIX, "", prefix=True)], "checkpoint")
    return source


def is_diffusers_layout(keys) -> bool:
    keys = set(keys)
    return "condition_embedder.time_proj.weight" in keys and "blocks.0.attn1.to_q.weight" in keys


def is_original_layout(keys) -> bool:
    keys = {k[len(WRAPPER_PREFIX):] if k.startswith(WRAPPER_PREFIX) else k for k in keys}
    return "time_projection.1.weight" in keys and "blocks.0.self_attn.q.weight" in keys


def as_diffusers(source: Mapping, where: str) -> Mapping:
    """The checkpoint under diffusers names, whichever layout it is in."""
    if is_diffusers_layout(source):
        return source
    if is_original_layout(source):
        return tables.RenamedSource(strip_wrapper(source), ORIGINAL_RENAMES, where)
    raise CheckpointError(f"{where}: not a Wan2.1 transformer checkpoint (found neither "
                          "'condition_embedder.time_proj.weight' (diffusers) nor 'time_projection.1.weight' "
                          "(original Wan, CausVid, Self-Forcing))")


def detect(keys) -> bool:
    return is_diffusers_layout(keys) or is_original_layout(keys)


def config_from_checkpoint(source: Mapping, where: str) -> WanConfig:
    """No config.json: the configuration from the tensor shapes (either layout). Heads are not visible in the
    shapes: the released models use 128-channel heads."""
    source = as_diffusers(source, where)
    shape = source.shape if hasattr(source, "shape") else (lambda n: np.shape(source[n]))
    d, c_in, pt, ph, pw = shape("patch_embedding.weight")
    head_dim = 128 if d % 128 == 0 else d
    layers = 1 + max(int(k.split(".")[1]) for k in source if k.startswith("blocks."))
    return WanConfig(
        patch_size=(pt, ph, pw), num_attention_heads=d // head_dim, attention_head_dim=head_dim, in_channels=c_in,
        out_channels=shape("proj_out.weight")[0] // (pt * ph * pw),
        text_dim=shape("condition_embedder.text_embedder.linear_1.weight")[1],
        freq_dim=shape("condition_embedder.time_embedder.linear_1.weight")[1],
        ffn_dim=shape("blocks.0.ffn.net.0.proj.weight")[0], num_layers=layers,
        cross_attn_norm="blocks.0.norm2.weight" in source)


def abstract(config: WanConfig, dtype=jnp.float32):
    """``(graphdef, abstract_state, targets)`` of a model with ``config``; allocates nothing."""
    return abstract_model(lambda: WanTransformer(config, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0)))


def load(source: Mapping, config: WanConfig, *, where: str, dtype=None, progress=None) -> WanTransformer:
    """Build a :class:`WanTransformer` from a checkpoint in any of the layouts; every key must be consumed."""
    source = as_diffusers(source, where)
    return tables.load_module(DIFFUSERS_RULES, abstract, config, source, where=where, dtype=dtype,
                              dtype_key="patch_embedding.weight", progress=progress)


def expected_tensors(config: WanConfig) -> dict[str, tuple[int, ...]]:
    """diffusers state-dict names and shapes of a model with ``config`` (no memory allocated)."""
    return tables.expected_tensors(DIFFUSERS_RULES, abstract(config)[2])


def export(model: WanTransformer) -> dict[str, np.ndarray]:
    """The model's parameters as a diffusers ``WanTransformer3DModel`` state dict (numpy)."""
    return tables.export_tensors(DIFFUSERS_RULES, {k: np.asarray(v) for k, v in flat_params(model).items()})


def export_original(model: WanTransformer) -> dict[str, np.ndarray]:
    """The model's parameters under the original Wan names (``Wan-AI/Wan2.1-T2V-*``'s safetensors; CausVid and
    Self-Forcing prefix them with ``model.``)."""
    return tables.rename_back(ORIGINAL_RENAMES, export(model))
