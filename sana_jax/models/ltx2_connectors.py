"""LTX-2 text path after Gemma-3: the feature extractor and the two text connectors (diffusers
``LTX2TextConnectors``, ``huggingface/diffusers:src/diffusers/pipelines/ltx2/connectors.py``; ltx-core
``FeatureExtractorV1`` + ``Embeddings1DConnector`` in
``Lightricks/LTX-2:packages/ltx-core/src/ltx_core/text_encoders/gemma/``).

1. Feature extractor: per sample and per layer, over the valid tokens, ``8·(x − mean)/(max − min + 1e-6)``; padded
   tokens zeroed; (B, T, D, layers) flattened with the layer index fastest; ``text_proj_in`` (D·layers → D, no bias).
2. Each connector (video, audio): padded positions are replaced by learnable registers (valid tokens moved to the
   front in order, registers tiled by absolute position), then unmasked blocks ``x += attn(rms(x));
   x += FF(rms(x))`` with fractional 1-D RoPE, and a final RMSNorm (no weights).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from sana_jax.config import ModelConfig
from sana_jax.errors import ConfigError, InputError
from sana_jax.nn.layers import DType, Linear, param, stacked
from sana_jax.nn.ltx_attention import GeluFeedForward, LTXAttention, rope_1d_fractional

DIFFUSERS_CLASS = "LTX2TextConnectors"


@dataclasses.dataclass(frozen=True)
class LTX2ConnectorsConfig(ModelConfig):
    CLASS_NAME = DIFFUSERS_CLASS
    FIXED = dict.fromkeys(("per_modality_projections", "video_gated_attn", "audio_gated_attn",  # LTX-2.3 options
                           "causal_temporal_positioning", "proj_bias"), False)

    caption_channels: int = 3840
    text_proj_in_factor: int = 49
    video_connector_num_attention_heads: int = 30
    video_connector_attention_head_dim: int = 128
    video_connector_num_layers: int = 2
    video_connector_num_learnable_registers: int | None = 128
    audio_connector_num_attention_heads: int = 30
    audio_connector_attention_head_dim: int = 128
    audio_connector_num_layers: int = 2
    audio_connector_num_learnable_registers: int | None = 128
    connector_rope_base_seq_len: int = 4096
    rope_theta: float = 10000.0
    rope_double_precision: bool = True
    rope_type: str = "split"

    @classmethod
    def preset(cls, name: str = "ltx-2.0") -> "LTX2ConnectorsConfig":
        if name != "ltx-2.0":
            raise ConfigError(f"unknown connectors preset {name!r}; expected 'ltx-2.0'")
        return cls()


class ConnectorBlock(nnx.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, rope_type: str, **kw):
        self.attn1 = LTXAttention(dim, heads, head_dim, rope_type=rope_type, **kw)
        self.ff = GeluFeedForward(dim, 4 * dim, **kw)

    def __call__(self, x, rope, bias):
        x = x + self.attn1(_rms(x), q_rope=rope, bias=bias)
        return x + self.ff(_rms(x))


def _rms(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), -1, keepdims=True) + eps)).astype(x.dtype)


class Connector(nnx.Module):
    """``LTX2ConnectorTransformer1d``: registers, RoPE'd pre-norm blocks (stacked, scanned), final RMSNorm."""

    def __init__(self, dim: int, heads: int, head_dim: int, layers: int, registers: int | None, *, rope_base: int,
                 rope_theta: float, rope_double: bool, rope_type: str, dtype: DType, param_dtype: DType,
                 rngs: nnx.Rngs):
        self.dim, self.rope_base, self.rope_theta, self.rope_double = dim, rope_base, rope_theta, rope_double
        self.registers = registers
        self.learnable_registers = (param(rngs, lambda k, s, t: jax.random.uniform(k, s, t, -1.0, 1.0),
                                          (registers, dim), (None, "embed"), param_dtype)
                                    if registers else nnx.data(None))

        self.blocks = stacked(layers, lambda r: ConnectorBlock(dim, heads, head_dim, rope_type, dtype=dtype,
                                                               param_dtype=param_dtype, rngs=r), rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``x`` (B, L, D), ``mask`` (B, L) of {0, 1}. Returns the embeddings and the mask they carry on."""
        b, length, _ = x.shape
        bias = None
        if self.learnable_registers is not None:
            if length % self.registers:
                raise InputError(f"text length {length} must be a multiple of the {self.registers} registers")
            regs = jnp.tile(self.learnable_registers[...].astype(x.dtype), (length // self.registers, 1))
            keep = mask.astype(bool)
            order = jnp.argsort(~keep, axis=1, stable=True)  # valid tokens first, in order
            front = jnp.take_along_axis(x, order[..., None], axis=1)
            valid = jnp.sum(keep, axis=1, keepdims=True)
            x = jnp.where((jnp.arange(length)[None] < valid)[..., None], front, regs[None])
            mask = jnp.ones_like(mask)
        else:  # diffusers' additive mask (mask − 1)·finfo.max; its returned mask is then all ones as well
            bias = jnp.where(mask.astype(bool), 0.0, jnp.finfo(jnp.float32).min)[:, None, None, :]
            mask = jnp.ones_like(mask)
        rope = rope_1d_fractional(length, self.dim, base_seq_len=self.rope_base, theta=self.rope_theta,
                                  double_precision=self.rope_double)
        graphdef, state = nnx.split(self.blocks)

        def body(h, st):
            return nnx.merge(graphdef, st)(h, rope, bias), None

        x, _ = jax.lax.scan(body, x, state)
        return _rms(x), mask


def feature_extract(hidden: jax.Array, mask: jax.Array, padding_side: str = "left", scale: float = 8.0,
                    eps: float = 1e-6) -> jax.Array:
    """Per-layer masked mean/range normalisation of Gemma hidden states (B, T, D, layers) → (B, T, D·layers).

    ``padding_side`` says where the padding is: the valid tokens are the last (left) or first (right)
    ``sum(mask)`` positions, as diffusers' ``per_layer_masked_mean_norm`` assumes."""
    b, t, d, n_layers = hidden.shape
    lengths = jnp.sum(mask, axis=-1).astype(jnp.int32)
    idx = jnp.arange(t)[None]
    valid = idx >= (t - lengths[:, None]) if padding_side == "left" else idx < lengths[:, None]
    v = valid[:, :, None, None]
    h = hidden.astype(jnp.float32)
    mean = jnp.sum(jnp.where(v, h, 0.0), axis=(1, 2), keepdims=True) / ((lengths * d).reshape(b, 1, 1, 1) + eps)
    lo = jnp.min(jnp.where(v, h, jnp.inf), axis=(1, 2), keepdims=True)
    hi = jnp.max(jnp.where(v, h, -jnp.inf), axis=(1, 2), keepdims=True)
    out = (h - mean) / (hi - lo + eps) * scale
    out = jnp.where(v, out, 0.0).reshape(b, t, d * n_layers)
    return out.astype(hidden.dtype)


class LTX2TextConnectors(nnx.Module):
    def __init__(self, config: LTX2ConnectorsConfig, *, dtype: DType = jnp.float32,
                 param_dtype: DType = jnp.float32, rngs: nnx.Rngs):
        cfg = self.config = config
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        dim = cfg.caption_channels
        self.text_proj_in = Linear(dim * cfg.text_proj_in_factor, dim, axes=("mlp", "embed"), use_bias=False, **kw)
        common = dict(rope_base=cfg.connector_rope_base_seq_len, rope_theta=cfg.rope_theta,
                      rope_double=cfg.rope_double_precision, rope_type=cfg.rope_type)
        for which in ("video", "audio"):
            heads = getattr(cfg, f"{which}_connector_num_attention_heads")
            head_dim = getattr(cfg, f"{which}_connector_attention_head_dim")
            if heads * head_dim != dim:
                raise ConfigError(f"{which} connector width {heads}×{head_dim} must equal caption_channels {dim}")
            setattr(self, f"{which}_connector", Connector(
                dim, heads, head_dim, getattr(cfg, f"{which}_connector_num_layers"),
                getattr(cfg, f"{which}_connector_num_learnable_registers"), **common, **kw))

    def __call__(self, hidden_states: jax.Array, mask: jax.Array, padding_side: str = "left"
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """All Gemma hidden states stacked as (B, T, D, layers) (or flattened (B, T, D·layers)) and the (B, T) mask
        → (video embeddings, audio embeddings, their mask)."""
        if hidden_states.ndim == 3:
            hidden_states = hidden_states.reshape(*hidden_states.shape[:2], self.config.caption_channels, -1)
        if hidden_states.shape[2:] != (self.config.caption_channels, self.config.text_proj_in_factor):
            raise InputError(f"hidden states must be (B, T, {self.config.caption_channels}, "
                             f"{self.config.text_proj_in_factor}), got {hidden_states.shape}")
        proj = self.text_proj_in(feature_extract(hidden_states, mask, padding_side))
        video, out_mask = self.video_connector(proj, mask)
        audio, _ = self.audio_connector(proj, mask)
        return video * out_mask[..., None].astype(video.dtype), audio, out_mask
