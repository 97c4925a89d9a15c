"""Gemma-2 and Gemma-3 (text) decoders without LM head: the text encoders of SANA-Video and the LTX-2 refiner.

Mirrors transformers' ``Gemma2Model`` / ``Gemma3TextModel`` (SANA-Video: the last hidden state of Gemma-2-2B, diffusers
``SanaVideoPipeline``; LTX-2: all 49 hidden states of Gemma-3-12B, diffusers ``LTX2Pipeline`` and
``Lightricks/LTX-2:packages/ltx-core/src/ltx_core/text_encoders/gemma/``). Points that matter for parity:

* embeddings are scaled by ``sqrt(hidden)`` cast to the activation dtype (bf16: sqrt(3840) → 62.0);
* RMSNorm multiplies by ``(1 + weight)`` in float32 and casts back; four norms per layer (pre/post attention and
  pre/post MLP); Gemma-3 also RMS-normalises q and k per head before RoPE;
* logits are scaled by ``query_pre_attn_scalar ** -0.5``; Gemma-2 soft-caps them (``tanh(x/50)·50``); logits and
  softmax are float32;
* ``layer_types`` says which layers use a sliding window (key within ``sliding_window`` − 1 positions back) and,
  for Gemma-3, which RoPE base applies (``rope_local_base_freq`` local, ``rope_theta`` with optional linear scaling
  global). Window and RoPE table are per-layer *arrays* scanned with the stacked layers, so all layers stay one
  stacked parameter set;
* positions are ``0..L-1`` whatever the padding (what the pipelines get by passing only ``attention_mask``);
* a query row with no visible key (left padding, or right padding past the sliding window) follows transformers'
  default attention: Gemma-2 (eager) averages *all* values uniformly, Gemma-3 (SDPA) outputs zero
  (``fully_masked_rows = "mean" | "zero"``). Real tokens never see padded keys, so this only changes padded rows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sana_jax.config import ModelConfig, key_error
from sana_jax.errors import ConfigError
from sana_jax.nn.layers import DType, Linear, param, stacked
from sana_jax.validate import check_token_inputs

SLIDING, FULL = "sliding_attention", "full_attention"
#: transformers class names whose checkpoints hold a Gemma-2/3 text decoder.
HF_CLASSES = ("Gemma2Model", "Gemma2ForCausalLM", "Gemma3TextModel", "Gemma3ForCausalLM", "Gemma3Model",
              "Gemma3ForConditionalGeneration")
_DEFAULTS = {  # transformers' config defaults (released config.json files omit some of them)
    "gemma2": dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                   num_attention_heads=8, num_key_value_heads=4, head_dim=256, sliding_window=4096,
                   attn_logit_softcapping=50.0, rope_theta=10000.0, rope_local_base_freq=10000.0, pattern=2,
                   max_position_embeddings=8192),
    "gemma3_text": dict(vocab_size=262208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                        num_attention_heads=8, num_key_value_heads=4, head_dim=256, sliding_window=4096,
                        attn_logit_softcapping=None, rope_theta=1e6, rope_local_base_freq=1e4, pattern=6,
                        max_position_embeddings=131072),
}


def _rope(spec: Mapping | None, theta: float, source: str) -> tuple[float, float]:
    """(theta, linear factor) from a transformers rope dict (``rope_parameters`` entry or old ``rope_scaling``)."""
    spec = dict(spec or {})
    kind = spec.get("rope_type", spec.get("type", "default"))
    if kind not in ("default", "linear"):
        raise ConfigError(f"{source}: rope_type {kind!r} is not supported (expected 'default' or 'linear')")
    factor = float(spec.get("factor", 1.0)) if kind == "linear" else 1.0
    return float(spec.get("rope_theta", theta)), factor


@dataclasses.dataclass(frozen=True)
class GemmaConfig(ModelConfig):
    """Hyper-parameters of a Gemma-2 / Gemma-3 text decoder, named as in transformers' configs."""

    model_type: str = "gemma2"  # "gemma2" or "gemma3_text"
    vocab_size: int = 256000
    hidden_size: int = 2304
    intermediate_size: int = 9216
    num_hidden_layers: int = 26
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    head_dim: int = 256
    rms_norm_eps: float = 1e-6
    query_pre_attn_scalar: float = 256.0
    sliding_window: int | None = 4096
    layer_types: tuple[str, ...] = ()
    attn_logit_softcapping: float | None = 50.0  # Gemma-2 only: transformers' Gemma-3 never applies it
    rope_theta: float | None = None  # global (full-attention) layers; None: the family's default
    rope_scaling_factor: float = 1.0  # linear scaling of the global RoPE
    rope_local_base_freq: float | None = None  # Gemma-3 sliding-window layers; None: the family's default
    pad_token_id: int | None = 0
    max_position_embeddings: int = 8192
    architecture: str | None = None  # transformers class the checkpoint came from (None: Gemma2Model/Gemma3TextModel)
    fully_masked_rows: str | None = None  # "mean" (eager, Gemma-2's default) or "zero" (SDPA, Gemma-3's default)

    def __post_init__(self):
        if self.model_type not in _DEFAULTS:
            raise ConfigError(f"model_type {self.model_type!r} is not supported (expected 'gemma2' or 'gemma3_text')")
        d, gemma3 = _DEFAULTS[self.model_type], self.model_type == "gemma3_text"
        fill = {"rope_theta": d["rope_theta"], "rope_local_base_freq": d["rope_local_base_freq"],
                "architecture": "Gemma3TextModel" if gemma3 else "Gemma2Model",
                "fully_masked_rows": "zero" if gemma3 else "mean"}
        for name, value in fill.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if gemma3:
            object.__setattr__(self, "attn_logit_softcapping", None)
        pattern = d["pattern"]
        types = tuple(self.layer_types) or tuple(SLIDING if (i + 1) % pattern else FULL
                                                 for i in range(self.num_hidden_layers))
        object.__setattr__(self, "layer_types", types)
        if len(types) != self.num_hidden_layers or not set(types) <= {SLIDING, FULL}:
            raise ConfigError(f"layer_types must list {self.num_hidden_layers} entries of '{SLIDING}'/'{FULL}', "
                              f"got {list(types)}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                              f"num_key_value_heads {self.num_key_value_heads}")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if self.fully_masked_rows not in ("mean", "zero"):
            raise ConfigError(f"fully_masked_rows must be 'mean' or 'zero', got {self.fully_masked_rows!r}")

    @property
    def is_gemma3(self) -> bool:
        return self.model_type == "gemma3_text"

    @property
    def windows(self) -> tuple[int, ...]:
        """Per layer: how many positions back (inclusive of the query) a key may be; 2**30 = unlimited."""
        big = 2 ** 30
        return tuple(self.sliding_window if t == SLIDING and self.sliding_window else big for t in self.layer_types)

    @property
    def rope_specs(self) -> tuple[tuple[float, float], ...]:
        """(theta, linear factor) of RoPE table 0 (sliding layers) and 1 (full layers)."""
        if self.is_gemma3:
            return (self.rope_local_base_freq, 1.0), (self.rope_theta, self.rope_scaling_factor)
        return (self.rope_theta, self.rope_scaling_factor), (self.rope_theta, self.rope_scaling_factor)

    @classmethod
    def preset(cls, name: str) -> GemmaConfig:
        """The released encoders: ``"gemma2-2b"`` (SANA-Video) or ``"gemma3-12b"`` (LTX-2, text part)."""
        if name == "gemma2-2b":
            return cls()
        if name == "gemma3-12b":
            return cls(model_type="gemma3_text", vocab_size=262208, hidden_size=3840, intermediate_size=15360,
                       num_hidden_layers=48, num_attention_heads=16, num_key_value_heads=8, sliding_window=1024,
                       rope_scaling_factor=8.0, max_position_embeddings=131072,
                       architecture="Gemma3ForConditionalGeneration")
        raise ConfigError(f"unknown preset {name!r}; expected 'gemma2-2b' or 'gemma3-12b'")

    @classmethod
    def from_hf(cls, config: Mapping[str, Any], source: str = "config") -> GemmaConfig:
        """Parse a transformers ``config.json`` dict (Gemma-2, Gemma-3 text, or Gemma-3 multimodal whose text part
        is ``text_config``); refuses other models and options this implementation does not have."""
        return cls.from_diffusers(config, source)

    @classmethod
    def _prepare(cls, config: dict, source: str) -> dict:
        """transformers' names and defaults → the fields."""
        arch = (config.get("architectures") or [None])[0] or config.get("_class_name")
        if config.get("model_type") == "gemma3" or "text_config" in config:
            config = {"model_type": "gemma3_text", **(config.get("text_config") or {})}
            arch = arch or "Gemma3ForConditionalGeneration"
        kind = config.get("model_type")
        if kind not in _DEFAULTS:
            raise key_error(source, "model_type", f"is a {kind or arch or 'unknown'} config, not Gemma-2 or Gemma-3 "
                                                  "text")
        d = _DEFAULTS[kind]
        get = lambda k: config[k] if config.get(k) is not None else d[k]  # noqa: E731
        act = config.get("hidden_activation") or config.get("hidden_act") or "gelu_pytorch_tanh"
        if act != "gelu_pytorch_tanh":
            raise key_error(source, "hidden_activation", f"{act!r} is not supported (expected gelu_pytorch_tanh)")
        if config.get("use_bidirectional_attention"):
            raise key_error(source, "use_bidirectional_attention", "true (embedding Gemma) is not supported")
        if config.get("attention_bias"):
            raise key_error(source, "attention_bias", "true is not used by any released Gemma and not supported")
        params = config.get("rope_parameters")
        if kind == "gemma2":
            glob = local = _rope(params or config.get("rope_scaling"), float(config.get("rope_theta") or 1e4), source)
        else:
            params = params or {}
            glob = _rope(params.get(FULL) or config.get("rope_scaling"), float(get("rope_theta")), source)
            local = _rope(params.get(SLIDING), float(get("rope_local_base_freq")), source)
            if local[1] != 1.0:
                raise ConfigError(f"{source}: scaled RoPE on sliding layers is not supported")
        types = config.get("layer_types")
        if types is None:
            pattern = config.get("sliding_window_pattern") or d["pattern"]
            types = [SLIDING if (i + 1) % pattern else FULL for i in range(get("num_hidden_layers"))]
        return dict(model_type=kind, vocab_size=get("vocab_size"), hidden_size=get("hidden_size"),
                    intermediate_size=get("intermediate_size"), num_hidden_layers=get("num_hidden_layers"),
                    num_attention_heads=get("num_attention_heads"), num_key_value_heads=get("num_key_value_heads"),
                    head_dim=get("head_dim"), rms_norm_eps=float(config.get("rms_norm_eps") or 1e-6),
                    query_pre_attn_scalar=float(config.get("query_pre_attn_scalar") or 256),
                    sliding_window=config.get("sliding_window", d["sliding_window"]), layer_types=tuple(types),
                    attn_logit_softcapping=config.get("attn_logit_softcapping", d["attn_logit_softcapping"]),
                    rope_theta=glob[0], rope_scaling_factor=glob[1], rope_local_base_freq=local[0],
                    pad_token_id=config.get("pad_token_id", 0),
                    max_position_embeddings=get("max_position_embeddings"),
                    architecture=arch if arch in HF_CLASSES else None,
                    fully_masked_rows=config.get("fully_masked_rows"))

    def to_diffusers(self) -> dict[str, Any]:
        """A transformers-style text config dict that :meth:`from_hf` (and transformers) read back."""
        d = {k: getattr(self, k) for k in ("model_type", "vocab_size", "hidden_size", "intermediate_size",
                                           "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                                           "head_dim", "rms_norm_eps", "query_pre_attn_scalar", "sliding_window",
                                           "attn_logit_softcapping", "pad_token_id", "max_position_embeddings",
                                           "fully_masked_rows")}
        rope = lambda theta, f: ({"rope_type": "linear", "factor": f} if f != 1.0 else  # noqa: E731
                                 {"rope_type": "default"}) | {"rope_theta": theta}
        local, glob = self.rope_specs
        d.update(layer_types=list(self.layer_types), architectures=[self.architecture],
                 hidden_activation="gelu_pytorch_tanh",
                 rope_parameters={FULL: rope(*glob), SLIDING: rope(*local)} if self.is_gemma3 else rope(*glob))
        return d

    to_hf = to_diffusers


class GemmaRMSNorm(nnx.Module):
    """``x / rms(x) · (1 + weight)`` in float32, cast back to the input dtype (weight initialised to zero)."""

    def __init__(self, dim: int, *, eps: float, axis_name: str | None = "embed", param_dtype: DType = jnp.float32,
                 rngs: nnx.Rngs | None = None):
        self.eps = eps
        self.weight = param(rngs, nnx.initializers.zeros, (dim,), (axis_name,), param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (y * (1.0 + self.weight[...].astype(jnp.float32))).astype(x.dtype)


class ScaledEmbed(nnx.Module):
    """Token embedding times ``sqrt(hidden)``, the scale rounded to the activation dtype as transformers does."""

    def __init__(self, vocab: int, dim: int, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        self.dtype, self.scale = dtype, math.sqrt(dim)
        self.embedding = param(rngs, nnx.initializers.normal(0.02), (vocab, dim), ("vocab", "embed"), param_dtype)

    def __call__(self, ids: jax.Array) -> jax.Array:
        x = jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)
        return x * jnp.asarray(self.scale, self.dtype)


def _rotate(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """transformers' ``rotate_half`` RoPE; x (B, L, H, D), cos/sin (L, D) already in x's dtype."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return x * cos[:, None] + jnp.concatenate([-x2, x1], axis=-1) * sin[:, None]


class GemmaAttention(nnx.Module):
    def __init__(self, cfg: GemmaConfig, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        d, hd = cfg.hidden_size, cfg.head_dim
        kw = dict(use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, hd
        self.scale = cfg.query_pre_attn_scalar ** -0.5
        self.softcap = cfg.attn_logit_softcapping
        self.zero_empty_rows = cfg.fully_masked_rows == "zero"
        self.q_proj = Linear(d, self.heads * hd, axes=("embed", "heads"), **kw)
        self.k_proj = Linear(d, self.kv_heads * hd, axes=("embed", "kv_heads"), **kw)
        self.v_proj = Linear(d, self.kv_heads * hd, axes=("embed", "kv_heads"), **kw)
        self.o_proj = Linear(self.heads * hd, d, axes=("heads", "embed"), **kw)
        norm = lambda: GemmaRMSNorm(hd, eps=cfg.rms_norm_eps, axis_name=None, param_dtype=param_dtype,  # noqa: E731
                                    rngs=rngs)
        self.q_norm = norm() if cfg.is_gemma3 else nnx.data(None)
        self.k_norm = norm() if cfg.is_gemma3 else nnx.data(None)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, allowed: jax.Array) -> jax.Array:
        """x (B, L, D); ``allowed`` (B, L_q, L_k) boolean."""
        b, n, _ = x.shape
        q = self.q_proj(x).reshape(b, n, self.heads, self.head_dim)
        k = self.k_proj(x).reshape(b, n, self.kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(b, n, self.kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        q = q.reshape(b, n, self.kv_heads, self.heads // self.kv_heads, self.head_dim)  # head h uses kv h // groups
        logits = jnp.einsum("bqkgd,bskd->bkgqs", q, k, preferred_element_type=jnp.float32) * self.scale
        if self.softcap is not None:
            logits = jnp.tanh(logits / self.softcap) * self.softcap
        mask = allowed[:, None, None]
        probs = jax.nn.softmax(jnp.where(mask, logits, jnp.finfo(jnp.float32).min), axis=-1)
        if self.zero_empty_rows:  # SDPA: a row without any visible key gives 0 (eager: uniform over all keys)
            probs = probs * jnp.any(mask, axis=-1, keepdims=True)
        out = jnp.einsum("bkgqs,bskd->bqkgd", probs.astype(v.dtype), v)
        return self.o_proj(out.reshape(b, n, self.heads * self.head_dim))


class GemmaMLP(nnx.Module):
    def __init__(self, cfg: GemmaConfig, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        d, h = cfg.hidden_size, cfg.intermediate_size
        kw = dict(use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = Linear(d, h, axes=("embed", "mlp"), **kw)
        self.up_proj = Linear(d, h, axes=("embed", "mlp"), **kw)
        self.down_proj = Linear(h, d, axes=("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.gelu(self.gate_proj(x), approximate=True) * self.up_proj(x))


class GemmaDecoderLayer(nnx.Module):
    def __init__(self, cfg: GemmaConfig, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        norm = lambda: GemmaRMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=param_dtype,  # noqa: E731
                                    rngs=rngs)
        self.self_attn = GemmaAttention(cfg, **kw)
        self.mlp = GemmaMLP(cfg, **kw)
        self.input_layernorm, self.post_attention_layernorm = norm(), norm()
        self.pre_feedforward_layernorm, self.post_feedforward_layernorm = norm(), norm()

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, allowed: jax.Array) -> jax.Array:
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), cos, sin, allowed))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


def rope_tables(cfg: GemmaConfig, length: int) -> tuple[jax.Array, jax.Array]:
    """cos and sin (2, L, head_dim) for table 0 (sliding layers) and 1 (full layers), float32."""
    dim = cfg.head_dim
    tables = []
    for theta, factor in cfg.rope_specs:
        inv_freq = (1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim) / factor).astype(np.float32)
        tables.append(inv_freq)
    angles = jnp.arange(length, dtype=jnp.float32)[None, :, None] * jnp.asarray(np.stack(tables))[:, None, :]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


class Gemma(nnx.Module):
    """Gemma-2 / Gemma-3 text decoder (no LM head). ``model(input_ids, attention_mask)`` → last hidden state
    (after the final norm); with ``output_hidden_states=True`` → ``(last, hidden_states)`` where
    ``hidden_states`` is transformers' tuple: embeddings, the output of layers 1..N−1, and the final-normed state.
    """

    def __init__(self, config: GemmaConfig, *, dtype: DType = jnp.float32, param_dtype: DType = jnp.float32,
                 rngs: nnx.Rngs):
        cfg = self.config = config
        self.dtype = dtype
        self.embed_tokens = ScaledEmbed(cfg.vocab_size, cfg.hidden_size, dtype=dtype, param_dtype=param_dtype,
                                        rngs=rngs)

        self.layers = stacked(cfg.num_hidden_layers, lambda r: GemmaDecoderLayer(cfg, dtype=dtype,
                                                                                 param_dtype=param_dtype, rngs=r), rngs)
        self.norm = GemmaRMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)

    def check_inputs(self, input_ids, attention_mask) -> tuple[jax.Array, jax.Array]:
        """``(ids, keep)``: validated integer ids (B, L) and a boolean key mask (all True when none is given)."""
        return check_token_inputs(input_ids, attention_mask, self.config.vocab_size)

    def run_layers(self, x: jax.Array, keep: jax.Array, collect: bool) -> tuple[jax.Array, jax.Array | None]:
        """The stacked layers over x (B, L, D) with key mask ``keep`` (B, L); per-layer outputs if ``collect``."""
        cfg, n = self.config, x.shape[1]
        cos, sin = (t.astype(self.dtype) for t in rope_tables(cfg, n))
        pos = jnp.arange(n)
        dist = pos[:, None] - pos[None, :]  # query − key
        causal = (dist >= 0)[None] & keep[:, None, :]
        windows = jnp.asarray(cfg.windows, jnp.int32)
        table = jnp.asarray([t == FULL for t in cfg.layer_types], jnp.int32)
        graphdef, state = nnx.split(self.layers)

        def body(h, xs):
            layer_state, window, t = xs
            layer = nnx.merge(graphdef, layer_state)
            h = layer(h, cos[t], sin[t], causal & (dist < window)[None])
            return h, (h if collect else None)

        return jax.lax.scan(body, x, (state, windows, table))

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None, *,
                 output_hidden_states: bool = False):
        """Args: input_ids (B, L) int; attention_mask (B, L) with 1 for tokens, 0 for padding (either side)."""
        input_ids, keep = self.check_inputs(input_ids, attention_mask)
        x = self.embed_tokens(input_ids)
        h, per_layer = self.run_layers(x, keep, output_hidden_states)
        last = self.norm(h)
        if not output_hidden_states:
            return last
        return last, (x, *(per_layer[i] for i in range(self.config.num_hidden_layers - 1)), last)
