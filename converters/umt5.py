"""UMT5 encoder checkpoints → :class:`sana_jax.models.umt5.UMT5Encoder` (Wan2.1's UMT5-XXL text encoder).

Accepted layouts:

* transformers ``UMT5EncoderModel`` (the ``text_encoder/`` of ``Wan-AI/Wan2.1-T2V-*-Diffusers``, 5 fp32 shards):
  ``shared.weight``, ``encoder.block.{i}.layer.0.SelfAttention.{q,k,v,o,relative_attention_bias}.weight``,
  ``encoder.block.{i}.layer.{0,1}.layer_norm.weight``, ``encoder.block.{i}.layer.1.DenseReluDense.{wi_0,wi_1,wo}
  .weight``, ``encoder.final_layer_norm.weight``. The tied ``encoder.embed_tokens.weight`` may stand beside
  ``shared.weight`` (then it is skipped) or instead of it. A full ``UMT5Model`` / ``UMT5ForConditionalGeneration``
  loads too: its ``decoder.*`` and ``lm_head.*`` keys are skipped.
* Wan's original ``models_t5_umt5-xxl-enc-bf16.pth`` (``Wan-Video/Wan2.1:wan/modules/t5.py`` ``T5Encoder``):
  ``token_embedding.weight``, ``blocks.{i}.{norm1,norm2}.weight``, ``blocks.{i}.attn.{q,k,v,o}.weight``,
  ``blocks.{i}.pos_embedding.embedding.weight``, ``blocks.{i}.ffn.gate.0.weight`` (the GELU branch, ``wi_0``),
  ``ffn.fc1`` (``wi_1``), ``ffn.fc2`` (``wo``), ``norm.weight``; presented under transformers names by a
  :class:`converters.tables.RenamedSource` (:data:`ORIGINAL_RENAMES`).

Without a ``config.json`` the configuration comes from the tensor shapes (:func:`config_from_checkpoint`);
``relative_attention_max_distance`` (128) and ``layer_norm_epsilon`` (1e-6) are not visible there and keep umt5's
values.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from converters import tables
from converters.nnx_state import abstract_model, flat_params
from converters.tables import LINEAR, Rename, Rule
from sana_jax.errors import CheckpointError, ConfigError
from sana_jax.models.umt5 import HF_CLASSES, UMT5Config, UMT5Encoder

FAMILY = "umt5"
CONFIG = UMT5Config
MODEL_CLASS_NAME = "UMT5EncoderModel"
#: every ``architectures[0]`` / ``_class_name`` this family answers to.
MODEL_CLASS_NAMES = HF_CLASSES
MODEL = UMT5Encoder

log = logging.getLogger(__name__)

EMBED = "shared.weight"
#: transformers' tied copy of :data:`EMBED` (``UMT5EncoderModel._tied_weights_keys``).
TIED_EMBED = "encoder.embed_tokens.weight"
_BLOCK = "encoder.block.{i}.layer"
_BIAS = f"{_BLOCK}.0.SelfAttention.relative_attention_bias.weight"
#: parts of the full encoder–decoder checkpoints that are not the encoder, skipped.
SKIPPED_PREFIXES = ("decoder.", "lm_head.")

#: Wan ``T5Encoder`` names → transformers names (after ``umt5_xxl_wan_original_keys``: checked 1:1 on names and
#: shapes, and numerically).
ORIGINAL_RENAMES = (
    Rename("token_embedding.weight", EMBED),
    Rename("blocks.{i}.norm1.weight", f"{_BLOCK}.0.layer_norm.weight"),
    *(Rename(f"blocks.{{i}}.attn.{p}.weight", f"{_BLOCK}.0.SelfAttention.{p}.weight") for p in "qkvo"),
    Rename("blocks.{i}.pos_embedding.embedding.weight", _BIAS),
    Rename("blocks.{i}.norm2.weight", f"{_BLOCK}.1.layer_norm.weight"),
    Rename("blocks.{i}.ffn.gate.0.weight", f"{_BLOCK}.1.DenseReluDense.wi_0.weight"),
    Rename("blocks.{i}.ffn.fc1.weight", f"{_BLOCK}.1.DenseReluDense.wi_1.weight"),
    Rename("blocks.{i}.ffn.fc2.weight", f"{_BLOCK}.1.DenseReluDense.wo.weight"),
    Rename("norm.weight", "encoder.final_layer_norm.weight"),
)


def rules(config: UMT5Config | None = None) -> list[Rule]:
    """transformers ``UMT5EncoderModel`` names → JAX paths of :class:`UMT5Encoder` (the same for every config)."""
    j = "layers"
    out = [Rule(EMBED, "embed_tokens"), Rule("encoder.final_layer_norm.weight", "final_layer_norm.weight"),
           Rule(_BIAS, f"{j}.self_attn.relative_attention_bias"),
           Rule(f"{_BLOCK}.0.layer_norm.weight", f"{j}.attn_norm.weight"),
           Rule(f"{_BLOCK}.1.layer_norm.weight", f"{j}.mlp_norm.weight")]
    out += [Rule(f"{_BLOCK}.0.SelfAttention.{p}.weight", f"{j}.self_attn.{p}.kernel", LINEAR) for p in "qkvo"]
    out += [Rule(f"{_BLOCK}.1.DenseReluDense.{p}.weight", f"{j}.mlp.{p}.kernel", LINEAR)
            for p in ("wi_0", "wi_1", "wo")]
    return out


def original_rules(config: UMT5Config | None = None) -> list[Rule]:
    """Wan's original names → JAX paths: :data:`ORIGINAL_RENAMES` composed with :func:`rules`."""
    by_name = {r.torch: r for r in rules(config)}
    return [Rule(r.src, by_name[r.dst].jax, by_name[r.dst].transform) for r in ORIGINAL_RENAMES]


def is_hf_layout(keys) -> bool:
    """transformers UMT5 names, with a relative-bias table in every layer (classic T5 has one in layer 0 only)."""
    keys = set(keys)
    first = _BIAS.format(i=0)
    if first not in keys or not (EMBED in keys or TIED_EMBED in keys):
        return False
    return f"{_BLOCK.format(i=1)}.0.SelfAttention.q.weight" not in keys or _BIAS.format(i=1) in keys


def is_original_layout(keys) -> bool:
    keys = set(keys)
    return "token_embedding.weight" in keys and "blocks.0.pos_embedding.embedding.weight" in keys


def detect(keys) -> bool:
    return is_hf_layout(keys) or is_original_layout(keys)


def as_hf(source: Mapping, where: str = "checkpoint") -> tables.RenamedSource:
    """The encoder's tensors under transformers ``UMT5EncoderModel`` names (one embedding, ``shared.weight``),
    whichever layout ``source`` is in; skipped keys (decoder, LM head, tied copy) are in ``.dropped``."""
    if is_original_layout(source):
        return tables.RenamedSource(source, ORIGINAL_RENAMES, where)
    if not is_hf_layout(source):
        raise CheckpointError(f"{where}: not a UMT5 encoder checkpoint (found neither '{_BIAS.format(i=0)}' "
                              "(transformers) nor 'blocks.0.pos_embedding.embedding.weight' (Wan .pth))")
    renames = [Rename(p, None, prefix=True) for p in SKIPPED_PREFIXES]
    if EMBED in source and TIED_EMBED in source:
        shape = (lambda n: tuple(source.shape(n))) if hasattr(source, "shape") else (lambda n: np.shape(source[n]))
        if shape(EMBED) != shape(TIED_EMBED):
            raise CheckpointError(f"{where}: {EMBED} {shape(EMBED)} and its tied copy {TIED_EMBED} "
                                  f"{shape(TIED_EMBED)} differ in shape")
        renames.append(Rename(TIED_EMBED, None))
    else:
        renames.append(Rename(TIED_EMBED, EMBED))
    return tables.RenamedSource(source, renames, where)


def config_from_checkpoint(source: Mapping, where: str) -> UMT5Config:
    """The configuration from tensor shapes (either layout): vocab and width from the embedding, heads and buckets
    from a relative-bias table, ``d_kv`` = q rows / heads, ``d_ff`` from ``wi_0``, layers by counting."""
    hf = as_hf(source, where)
    if f"{_BLOCK.format(i=0)}.1.DenseReluDense.wi.weight" in hf:
        raise ConfigError(f"{where}: a non-gated T5 FFN ('wi'); only feed_forward_proj 'gated-gelu' is supported")
    pattern = re.compile(r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.q\.weight\Z")
    layers = {int(m[1]) for k in hf if (m := pattern.match(k))}
    try:
        vocab, d_model = hf.shape(EMBED)
        buckets, heads = hf.shape(_BIAS.format(i=0))
        inner = hf.shape(f"{_BLOCK.format(i=0)}.0.SelfAttention.q.weight")[0]
        d_ff = hf.shape(f"{_BLOCK.format(i=0)}.1.DenseReluDense.wi_0.weight")[0]
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{where}: cannot read the UMT5 shapes ({e}); pass its config.json") from None
    if inner % heads:
        raise ConfigError(f"{where}: q has {inner} rows, not a multiple of {heads} heads (relative-bias table)")
    return UMT5Config.build(dict(vocab_size=vocab, d_model=d_model, d_kv=inner // heads, d_ff=d_ff,
                                 num_layers=max(layers) + 1, num_heads=heads,
                                 relative_attention_num_buckets=buckets), where)


def abstract(config: UMT5Config, dtype=jnp.float32):
    """``(graphdef, abstract_state, targets)`` of a model with ``config``; allocates nothing."""
    return abstract_model(lambda: UMT5Encoder(config, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0)))


def load(source: Mapping, config: UMT5Config, *, where: str, dtype=None, progress=None) -> UMT5Encoder:
    """Build a :class:`UMT5Encoder` from a checkpoint in either layout; every encoder key must be consumed."""
    hf = as_hf(source, where)
    if hf.dropped:
        log.info("%s: skipped %d tensors that are not the encoder (%s …)", where, len(hf.dropped),
                 ", ".join(hf.dropped[:3]))
    return tables.load_module(rules(config), abstract, config, hf, where=where, dtype=dtype, dtype_key=EMBED,
                              progress=progress)


def expected_tensors(config: UMT5Config, tied: bool = True) -> dict[str, tuple[int, ...]]:
    """transformers ``UMT5EncoderModel`` state-dict names and shapes (``tied``: with the tied
    ``encoder.embed_tokens.weight``, as ``state_dict()`` lists it)."""
    out = tables.expected_tensors(rules(config), abstract(config)[2])
    return {**out, TIED_EMBED: out[EMBED]} if tied else out


def expected_original_tensors(config: UMT5Config) -> dict[str, tuple[int, ...]]:
    """Names and shapes of Wan's ``models_t5_umt5-xxl-enc-bf16.pth`` layout for ``config``."""
    return tables.expected_tensors(original_rules(config), abstract(config)[2])


def export(model: UMT5Encoder) -> dict[str, np.ndarray]:
    """The model's parameters as a transformers state dict (numpy; the embedding once, as ``shared.weight``, which is
    what ``save_pretrained`` writes)."""
    return tables.export_tensors(rules(model.config), {k: np.asarray(v) for k, v in flat_params(model).items()})


def export_original(model: UMT5Encoder) -> dict[str, np.ndarray]:
    """The model's parameters under Wan's original ``T5Encoder`` names (numpy)."""
    return tables.export_tensors(original_rules(model.config),
                                 {k: np.asarray(v) for k, v in flat_params(model).items()})


__all__ = ["CONFIG", "EMBED", "FAMILY", "MODEL", "MODEL_CLASS_NAME", "MODEL_CLASS_NAMES", "ORIGINAL_RENAMES",
           "TIED_EMBED", "abstract", "as_hf", "config_from_checkpoint", "detect", "expected_original_tensors",
           "expected_tensors", "export", "export_original", "is_hf_layout", "is_original_layout", "load",
           "original_rules", "rules"]
