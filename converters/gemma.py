"""Gemma-2 / Gemma-3 text-decoder checkpoints (transformers layouts) → :class:`sana_jax.models.gemma.Gemma`.

Accepted layouts (the text decoder's keys under one prefix; every text key must be consumed):

* ``Gemma2Model`` / ``Gemma3TextModel``: ``embed_tokens.weight``, ``layers.{i}.…``, ``norm.weight``;
* ``Gemma2ForCausalLM`` / ``Gemma3ForCausalLM``: the same under ``model.``, plus ``lm_head.weight`` when untied;
* ``Gemma3ForConditionalGeneration``: ``model.language_model.`` (transformers ≥ 4.52 / 5) or
  ``language_model.model.`` (the released google/gemma-3-* files), with ``vision_tower.*``,
  ``multi_modal_projector.*`` (either prefix) and ``lm_head`` beside it; ``Gemma3Model`` (no head):
  ``language_model.``.

Keys of other parts (vision tower, projector, LM head) are skipped explicitly: they are listed in
``text_source(...).dropped`` and logged by :func:`load`. Sharded checkpoints come through
``converters.safetensors_io.open_safetensors(index.json)``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from converters import tables
from converters.nnx_state import abstract_model, flat_params
from converters.quantized import dequantized
from converters.safetensors_io import open_safetensors
from converters.tables import LINEAR, Rename, Rule
from sana_jax.errors import CheckpointError, ConfigError
from sana_jax.models.gemma import HF_CLASSES, Gemma, GemmaConfig

FAMILY = "gemma"
CONFIG = GemmaConfig
MODEL_CLASS_NAME = "Gemma2Model"
#: every ``architectures[0]`` / ``_class_name`` this family answers to.
MODEL_CLASS_NAMES = HF_CLASSES
MODEL = Gemma

log = logging.getLogger(__name__)

#: text-decoder prefixes, longest first.
TEXT_PREFIXES = ("model.language_model.", "language_model.model.", "language_model.", "model.", "")
#: other parts of the multimodal / causal-LM checkpoints, skipped.
SKIPPED_PREFIXES = ("model.vision_tower.", "vision_tower.", "model.multi_modal_projector.", "multi_modal_projector.",
                    "lm_head.", "language_model.lm_head.")


def _layer_rules(gemma3: bool) -> list[Rule]:
    t, j = "layers.{i}", "layers"
    rules = [Rule(f"{t}.self_attn.{p}.weight", f"{j}.self_attn.{p}.kernel", LINEAR)
             for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    rules += [Rule(f"{t}.mlp.{p}.weight", f"{j}.mlp.{p}.kernel", LINEAR) for p in ("gate_proj", "up_proj", "down_proj")]
    norms = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm")
    rules += [Rule(f"{t}.{n}.weight", f"{j}.{n}.weight") for n in norms]
    if gemma3:
        rules += [Rule(f"{t}.self_attn.{n}.weight", f"{j}.self_attn.{n}.weight") for n in ("q_norm", "k_norm")]
    return rules


def rules(config: GemmaConfig, prefix: str = "") -> list[Rule]:
    """Key table of the text decoder, checkpoint names under ``prefix`` (e.g. ``"model.language_model."``)."""
    base = [Rule("embed_tokens.weight", "embed_tokens.embedding"), Rule("norm.weight", "norm.weight"),
            *_layer_rules(config.is_gemma3)]
    return [Rule(prefix + r.torch, r.jax, r.transform) for r in base]


def text_prefix(keys) -> str:
    """The prefix under which the checkpoint holds the text decoder."""
    keys = set(keys)
    for prefix in TEXT_PREFIXES:
        if f"{prefix}embed_tokens.weight" in keys and f"{prefix}layers.0.input_layernorm.weight" in keys:
            return prefix
    raise CheckpointError("no Gemma text decoder found (looked for embed_tokens.weight and "
                          f"layers.0.input_layernorm.weight under the prefixes {list(TEXT_PREFIXES)})")


def text_source(source: Mapping, where: str = "checkpoint") -> tables.RenamedSource:
    """The checkpoint's text-decoder tensors under ``Gemma2Model`` names; skipped keys are in ``.dropped``."""
    try:
        prefix = text_prefix(source)
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from None
    renames = [Rename(p, None, prefix=True) for p in SKIPPED_PREFIXES if not prefix.startswith(p)]
    if prefix:
        renames.append(Rename(prefix, "", prefix=True))
    return tables.RenamedSource(source, renames, where)


def detect(keys) -> bool:
    keys = set(keys)
    try:
        prefix = text_prefix(keys)
    except CheckpointError:
        return False
    return f"{prefix}layers.0.pre_feedforward_layernorm.weight" in keys  # Gemma-2/3 only (not Llama / Gemma-1)


def config_from_checkpoint(source: Mapping, where: str) -> GemmaConfig:
    raise ConfigError(f"{where}: a Gemma checkpoint needs its config.json (head count, sliding window and RoPE "
                      "bases are not visible in the tensor shapes); pass config=")


def abstract(config: GemmaConfig, dtype=jnp.float32):
    """``(graphdef, abstract_state, targets)`` of a model with ``config``; allocates nothing."""
    return abstract_model(lambda: Gemma(config, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0)))


def load(source: Mapping, config: GemmaConfig, *, where: str, dtype=None, progress=None) -> Gemma:
    """Build a :class:`Gemma` from a checkpoint in any layout above; every text-decoder key must be consumed."""
    text = text_source(source, where)
    if text.dropped:
        log.info("%s: skipped %d non-text tensors (%s …)", where, len(text.dropped), ", ".join(text.dropped[:3]))
    return tables.load_module(rules(config), abstract, config, text, where=where, dtype=dtype,
                              dtype_key="embed_tokens.weight", progress=progress)


def load_folder(folder: str | Path, *, dtype=None, progress=None) -> Gemma:
    """Load a transformers ``save_pretrained`` folder (``config.json`` + ``model.safetensors`` or a sharded index)."""
    folder = Path(folder)
    config = GemmaConfig.from_json(folder / "config.json")
    for name in ("model.safetensors.index.json", "model.safetensors"):
        if (folder / name).exists():
            source = dequantized(open_safetensors(folder / name), str(folder / name))
            return load(source, config, where=str(folder / name), dtype=dtype, progress=progress)
    raise CheckpointError(f"{folder}: no model.safetensors or model.safetensors.index.json")


def expected_tensors(config: GemmaConfig, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes of the text decoder (``prefix`` e.g. ``"model."`` for ``*ForCausalLM``)."""
    return tables.expected_tensors(rules(config, prefix), abstract(config)[2])


def export(model: Gemma, prefix: str = "") -> dict:
    """The model's parameters as a transformers state dict (numpy), names under ``prefix``."""
    return tables.export_tensors(rules(model.config, prefix), {k: np.asarray(v) for k, v in flat_params(model).items()})
