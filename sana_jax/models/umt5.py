"""UMT5 text encoder (encoder stack only): Wan2.1's UMT5-XXL prompt encoder.

Mirrors transformers' ``UMT5EncoderModel``
(``huggingface/transformers:src/transformers/models/umt5/modeling_umt5.py``) and Wan's own ``T5Encoder``
(``Wan-Video/Wan2.1:wan/modules/t5.py``, ``umt5_xxl(encoder_only=True)``), which hold the same weights under other
names (``converters.umt5``). Points that matter for parity:

* token embedding **without** any scaling; dropout is inactive (inference only);
* every layer owns its relative-position-bias table ``[num_buckets, num_heads]`` (umT5; classic T5 shares layer 0's),
  indexed by T5's *bidirectional* buckets of ``key_pos − query_pos`` (:func:`relative_position_buckets`, computed in
  float32 exactly as torch does, so bucket edges such as distance 16, 32, 64 agree);
* attention scores ``q·kᵀ + bias`` **without** the ``1/√d`` scale, float32, padded keys (``mask == 0``) at
  ``finfo(float32).min``, softmax in float32 (as Wan does; transformers' eager path adds ``finfo.min`` too);
* T5 layer norm (RMS, no mean, no bias): variance in float32, the normalised activations cast to the weight's dtype
  when that is 16-bit, then multiplied by the weight;
* gated FFN ``wo(gelu_tanh(wi_0 x) · wi_1 x)`` (``feed_forward_proj = "gated-gelu"``, ``dense_act_fn = gelu_new``);
* pre-norm residual blocks and a final layer norm. fp16 activation clamping (transformers / Wan in float16) is not
  reproduced: run in float32 or bfloat16.

The layers are stacked (``sana_jax.nn.layers.stacked``) and run with ``lax.scan``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sana_jax.config import ModelConfig, key_error
from sana_jax.errors import ConfigError
from sana_jax.nn.layers import DType, Linear, param, stacked
from sana_jax.validate import check_token_inputs

#: transformers class names whose checkpoints hold a UMT5 encoder (the full models also hold a decoder, skipped).
HF_CLASSES = ("UMT5EncoderModel", "UMT5Model", "UMT5ForConditionalGeneration")


@dataclasses.dataclass(frozen=True)
class UMT5Config(ModelConfig):
    """Hyper-parameters of a UMT5 encoder, named as in transformers' ``UMT5Config``; defaults are umt5-xxl's (the
    ``text_encoder/config.json`` of ``Wan-AI/Wan2.1-T2V-*-Diffusers``)."""

    CLASS_NAME: ClassVar[str] = "UMT5EncoderModel"
    ALSO_READS: ClassVar[tuple[str, ...]] = HF_CLASSES[1:]

    vocab_size: int = 256384
    d_model: int = 4096
    d_kv: int = 64
    d_ff: int = 10240
    num_layers: int = 24
    num_heads: int = 64
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "gated-gelu"

    def __post_init__(self):
        if self.feed_forward_proj != "gated-gelu":
            raise ConfigError(f"feed_forward_proj {self.feed_forward_proj!r} is not supported (only 'gated-gelu', "
                              "the UMT5 / T5 v1.1 FFN)")
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.relative_attention_num_buckets < 4 or self.relative_attention_num_buckets % 4:
            raise ConfigError("relative_attention_num_buckets must be a multiple of 4 (≥ 4), got "
                              f"{self.relative_attention_num_buckets}")
        if self.relative_attention_max_distance <= self.relative_attention_num_buckets // 4:
            raise ConfigError(f"relative_attention_max_distance must exceed num_buckets / 4 = "
                              f"{self.relative_attention_num_buckets // 4}, got {self.relative_attention_max_distance}")

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.d_kv

    @classmethod
    def _prepare(cls, config: dict, source: str) -> dict:
        """Refuse classic T5 (one shared bias table), other FFNs and other architectures."""
        kind = config.get("model_type")
        if kind is not None and kind != "umt5":
            raise key_error(source, "model_type", f"{kind!r} is not supported (only 'umt5': classic T5 shares one "
                                                  "relative-bias table and is another model)")
        arch = (config.get("architectures") or [None])[0]
        if arch is not None and arch not in HF_CLASSES:
            raise key_error(source, "architectures", f"{arch!r} is not a UMT5 encoder ({', '.join(HF_CLASSES)})")
        act = config.get("dense_act_fn")
        if act is not None and act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise key_error(source, "dense_act_fn", f"{act!r} is not supported (only the tanh GELU 'gelu_new')")
        return config

    def _extra_keys(self) -> dict[str, Any]:
        """What transformers' ``UMT5Config`` needs to read the file back as an encoder."""
        return {"architectures": [self.CLASS_NAME], "model_type": "umt5", "dense_act_fn": "gelu_new",
                "is_gated_act": True, "pad_token_id": 0, "eos_token_id": 1}


def relative_position_buckets(query_length: int, key_length: int, num_buckets: int, max_distance: int
                              ) -> np.ndarray:
    """T5's bidirectional bucket of ``key_pos − query_pos`` for every (query, key) pair, int32 (Lq, Lk).

    Half the buckets are for positive distances; within a half, distances below ``num_buckets / 4`` have their own
    bucket and larger ones share logarithmic bins up to ``max_distance``. Computed in numpy float32 with the same
    operations as transformers' ``_relative_position_bucket`` (and Wan's
    ``T5RelativeEmbedding._relative_position_bucket``) so that the truncation at the bin edges agrees bit for bit.
    """
    rel = np.arange(key_length)[None, :] - np.arange(query_length)[:, None]
    half = num_buckets // 2
    max_exact = half // 2
    dist = np.abs(rel)
    with np.errstate(divide="ignore"):
        log_ratio = (np.log(dist.astype(np.float32) / np.float32(max_exact))
                     / np.float32(math.log(max_distance / max_exact)) * np.float32(half - max_exact))
    large = np.minimum(max_exact + np.where(dist < max_exact, 0, log_ratio).astype(np.int64), half - 1)
    return ((rel > 0) * half + np.where(dist < max_exact, dist, large)).astype(np.int32)


class T5LayerNorm(nnx.Module):
    """``weight · x · rsqrt(mean(x²) + eps)``: variance in float32, x cast to a 16-bit weight's dtype before the
    multiply (transformers' ``UMT5LayerNorm``, Wan's ``T5LayerNorm``); the result in the input dtype."""

    def __init__(self, dim: int, *, eps: float, param_dtype: DType = jnp.float32, rngs: nnx.Rngs | None = None):
        self.eps = eps
        self.weight = param(rngs, nnx.initializers.ones, (dim,), ("embed",), param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.weight[...]
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        if w.dtype in (jnp.bfloat16, jnp.float16):
            y = y.astype(w.dtype)
        return (w * y).astype(x.dtype)


class UMT5Attention(nnx.Module):
    """Self-attention with a per-layer relative position bias and no score scaling."""

    def __init__(self, cfg: UMT5Config, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        kw = dict(use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.heads, self.d_kv = cfg.num_heads, cfg.d_kv
        self.q = Linear(cfg.d_model, cfg.inner_dim, axes=("embed", "heads"), **kw)
        self.k = Linear(cfg.d_model, cfg.inner_dim, axes=("embed", "heads"), **kw)
        self.v = Linear(cfg.d_model, cfg.inner_dim, axes=("embed", "heads"), **kw)
        self.o = Linear(cfg.inner_dim, cfg.d_model, axes=("heads", "embed"), **kw)
        self.relative_attention_bias = param(rngs, nnx.initializers.normal(1.0),
                                             (cfg.relative_attention_num_buckets, cfg.num_heads), (None, "heads"),
                                             param_dtype)

    def __call__(self, x: jax.Array, buckets: jax.Array, keep: jax.Array) -> jax.Array:
        """x (B, L, D); ``buckets`` (L, L) int; ``keep`` (B, L) bool, False for padded keys."""
        b, n, _ = x.shape
        q = self.q(x).reshape(b, n, self.heads, self.d_kv)
        k = self.k(x).reshape(b, n, self.heads, self.d_kv)
        v = self.v(x).reshape(b, n, self.heads, self.d_kv)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        bias = jnp.take(self.relative_attention_bias[...], buckets, axis=0)  # (Lq, Lk, H)
        logits = logits + jnp.transpose(bias, (2, 0, 1)).astype(jnp.float32)[None]
        logits = jnp.where(keep[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        return self.o(out.reshape(b, n, self.heads * self.d_kv))


class UMT5GatedFFN(nnx.Module):
    """``wo(gelu_tanh(wi_0 x) · wi_1 x)`` (transformers ``UMT5DenseGatedActDense``), no biases."""

    def __init__(self, cfg: UMT5Config, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        kw = dict(use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.wi_0 = Linear(cfg.d_model, cfg.d_ff, axes=("embed", "mlp"), **kw)
        self.wi_1 = Linear(cfg.d_model, cfg.d_ff, axes=("embed", "mlp"), **kw)
        self.wo = Linear(cfg.d_ff, cfg.d_model, axes=("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.wo(jax.nn.gelu(self.wi_0(x), approximate=True) * self.wi_1(x))


class UMT5Block(nnx.Module):
    """``x + attn(norm(x))``, then ``x + ffn(norm(x))``."""

    def __init__(self, cfg: UMT5Config, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.attn_norm = T5LayerNorm(cfg.d_model, eps=cfg.layer_norm_epsilon, param_dtype=param_dtype, rngs=rngs)
        self.self_attn = UMT5Attention(cfg, **kw)
        self.mlp_norm = T5LayerNorm(cfg.d_model, eps=cfg.layer_norm_epsilon, param_dtype=param_dtype, rngs=rngs)
        self.mlp = UMT5GatedFFN(cfg, **kw)

    def __call__(self, x: jax.Array, buckets: jax.Array, keep: jax.Array) -> jax.Array:
        x = x + self.self_attn(self.attn_norm(x), buckets, keep)
        return x + self.mlp(self.mlp_norm(x))


class UMT5Encoder(nnx.Module):
    """UMT5 encoder stack. ``model(input_ids, attention_mask)`` → last hidden state (B, L, d_model), after the final
    layer norm (transformers' ``UMT5EncoderModel(...).last_hidden_state``)."""

    def __init__(self, config: UMT5Config, *, dtype: DType = jnp.float32, param_dtype: DType = jnp.float32,
                 rngs: nnx.Rngs):
        cfg = self.config = config
        self.dtype = dtype
        self.embed_tokens = param(rngs, nnx.initializers.normal(1.0), (cfg.vocab_size, cfg.d_model),
                                  ("vocab", "embed"), param_dtype)
        self.layers = stacked(cfg.num_layers, lambda r: UMT5Block(cfg, dtype=dtype, param_dtype=param_dtype,
                                                                  rngs=r), rngs)
        self.final_layer_norm = T5LayerNorm(cfg.d_model, eps=cfg.layer_norm_epsilon, param_dtype=param_dtype,
                                            rngs=rngs)

    def check_inputs(self, input_ids, attention_mask) -> tuple[jax.Array, jax.Array]:
        """``(ids, keep)``: validated integer ids (B, L) and a boolean key mask (all True when none is given)."""
        return check_token_inputs(input_ids, attention_mask, self.config.vocab_size)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """Args: input_ids (B, L) int; attention_mask (B, L), 1 for tokens and 0 for padding (keys only)."""
        cfg = self.config
        input_ids, keep = self.check_inputs(input_ids, attention_mask)
        n = input_ids.shape[1]
        buckets = jnp.asarray(relative_position_buckets(n, n, cfg.relative_attention_num_buckets,
                                                        cfg.relative_attention_max_distance))
        x = jnp.take(self.embed_tokens[...], input_ids, axis=0).astype(self.dtype)
        graphdef, state = nnx.split(self.layers)

        def body(h, layer_state):
            return nnx.merge(graphdef, layer_state)(h, buckets, keep), None

        x, _ = jax.lax.scan(body, x, state)
        return self.final_layer_norm(x)
