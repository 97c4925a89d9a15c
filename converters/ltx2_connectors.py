"""LTX-2 text connectors: diffusers ``connectors/`` (``LTX2TextConnectors``) and the native LTX-2 single file
(``text_embedding_projection.aggregate_embed`` + ``model.diffusion_model.{video,audio}_embeddings_connector``).
Key names as ``huggingface/diffusers:scripts/convert_ltx2_to_diffusers.py`` maps them."""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from converters import tables
from converters.nnx_state import abstract_model
from converters.tables import LINEAR, Rename, Rule
from sana_jax.errors import CheckpointError, ConfigError
from sana_jax.models.ltx2_connectors import DIFFUSERS_CLASS, LTX2ConnectorsConfig, LTX2TextConnectors

FAMILY = "ltx2_connectors"
CONFIG = LTX2ConnectorsConfig
MODEL_CLASS_NAME = DIFFUSERS_CLASS
MODEL = LTX2TextConnectors
NATIVE_PROJ = "text_embedding_projection.aggregate_embed.weight"
NATIVE_CONNECTOR = "model.diffusion_model.{}_embeddings_connector."


def _linear(torch: str, jax_path: str) -> list[Rule]:
    return [Rule(f"{torch}.weight", f"{jax_path}.kernel", LINEAR), Rule(f"{torch}.bias", f"{jax_path}.bias")]


def diffusers_rules(cfg: LTX2ConnectorsConfig) -> list[Rule]:
    rules = [Rule("text_proj_in.weight", "text_proj_in.kernel", LINEAR)]
    for w in ("video", "audio"):
        t, j = f"{w}_connector.transformer_blocks.{{i}}", f"{w}_connector.blocks"
        if getattr(cfg, f"{w}_connector_num_learnable_registers"):
            rules.append(Rule(f"{w}_connector.learnable_registers", f"{w}_connector.learnable_registers"))
        for proj in ("to_q", "to_k", "to_v"):
            rules += _linear(f"{t}.attn1.{proj}", f"{j}.attn1.{proj}")
        rules += _linear(f"{t}.attn1.to_out.0", f"{j}.attn1.to_out")
        rules += [Rule(f"{t}.attn1.norm_q.weight", f"{j}.attn1.norm_q.weight"),
                  Rule(f"{t}.attn1.norm_k.weight", f"{j}.attn1.norm_k.weight")]
        rules += _linear(f"{t}.ff.net.0.proj", f"{j}.ff.proj_in") + _linear(f"{t}.ff.net.2", f"{j}.ff.proj_out")
    return rules


def native_renames() -> list[Rename]:
    renames = [Rename(NATIVE_PROJ, "text_proj_in.weight")]
    for w in ("video", "audio"):
        p = NATIVE_CONNECTOR.format(w)
        renames += [Rename(f"{p}transformer_1d_blocks.{{i}}.attn1.q_norm.weight",
                           f"{w}_connector.transformer_blocks.{{i}}.attn1.norm_q.weight"),
                    Rename(f"{p}transformer_1d_blocks.{{i}}.attn1.k_norm.weight",
                           f"{w}_connector.transformer_blocks.{{i}}.attn1.norm_k.weight"),
                    Rename(f"{p}transformer_1d_blocks.", f"{w}_connector.transformer_blocks.", prefix=True),
                    Rename(f"{p}learnable_registers", f"{w}_connector.learnable_registers")]
    return renames


def is_diffusers_layout(keys) -> bool:
    return "text_proj_in.weight" in set(keys)


def is_native_layout(keys) -> bool:
    return NATIVE_PROJ in set(keys)


def detect(keys) -> bool:
    return is_diffusers_layout(keys) or is_native_layout(keys)


def config_from_checkpoint(source: Mapping, where: str) -> LTX2ConnectorsConfig:
    """Native files: the LTX-2.0 layout is fixed; the config is checked against the shapes when loading."""
    if is_native_layout(source):
        return LTX2ConnectorsConfig.preset("ltx-2.0")
    raise ConfigError(f"{where}: a diffusers-layout connectors file needs its config.json beside it or config=")


def as_diffusers(source: Mapping, where: str) -> Mapping:
    if is_native_layout(source):
        renamed = tables.RenamedSource(source, native_renames(), where)
        keep = [k for k in renamed if k.startswith(("text_proj_in.", "video_connector.", "audio_connector."))
                or "_embeddings_connector." in k]  # unmapped connector keys stay in and are reported
        return tables.Subset(renamed, keep)
    if is_diffusers_layout(source):
        return source
    raise CheckpointError(f"{where}: not an LTX-2 text-connectors checkpoint (no 'text_proj_in.weight' or "
                          f"'{NATIVE_PROJ}')")


def abstract(config: LTX2ConnectorsConfig, dtype=jnp.float32):
    return abstract_model(lambda: LTX2TextConnectors(config, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0)))


def load(source: Mapping, config: LTX2ConnectorsConfig, *, where: str, dtype=None, progress=None
         ) -> LTX2TextConnectors:
    source = as_diffusers(source, where)
    return tables.load_module(diffusers_rules(config), abstract, config, source, where=where, dtype=dtype,
                              dtype_key="text_proj_in.weight",
                              progress=progress)


def expected_tensors(config: LTX2ConnectorsConfig) -> dict[str, tuple[int, ...]]:
    return tables.expected_tensors(diffusers_rules(config), abstract(config)[2])


def export(model: LTX2TextConnectors) -> dict[str, np.ndarray]:
    return tables.export_module(diffusers_rules(model.config), model)
