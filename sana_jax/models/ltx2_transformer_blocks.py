"""One LTX-2 audio/video transformer block (diffusers ``LTX2VideoTransformerBlock``, ltx-core
``BasicAVTransformerBlock`` in ``Lightricks/LTX-2:packages/ltx-core/src/ltx_core/model/transformer/transformer.py``)
and the adaLN-single embedder.

Per block, for each modality m ∈ {video, audio} with ``(shift, scale, gate)_{msa, mlp} = table_m(6, D) + temb_m``:

1. ``x += gate_msa · SelfAttn(rms(x)·(1 + scale_msa) + shift_msa)`` with the modality's RoPE;
2. ``x += TextCrossAttn(rms(x), text_m)`` (no modulation, no RoPE, no gate);
3. a↔v cross attention from ``vn = rms(video)``, ``an = rms(audio)`` taken once before both directions; the
   per-block (5, D) tables hold rows **(scale_a2v, shift_a2v, scale_v2a, shift_v2a, gate)** (scale first) and are
   added to the global ``av_cross_attn_*`` embeddings:
   ``video += gate_a2v · A2V(vn·(1+sv0)+sv1, an·(1+sa0)+sa1)``;
   ``audio += gate_v2a · V2A(an·(1+sa2)+sa3, vn·(1+sv2)+sv3)``
   with temporal-only RoPE (queries get their own time, keys the other modality's);
4. ``x += gate_mlp · FF(rms(x)·(1 + scale_mlp) + shift_mlp)``.

``audio=False`` (video-only) drops steps 1–4 of the audio stream and step 3 entirely.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from sana_jax.nn.embeddings import TimestepEmbedding, timestep_sinusoid
from sana_jax.nn.layers import DType, Linear, param
from sana_jax.nn.ltx_attention import GeluFeedForward, LTXAttention

RopeTables = tuple[jax.Array, jax.Array]


def rms_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """RMSNorm without weight, statistic in float32 (diffusers ``RMSNorm(elementwise_affine=False)``)."""
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), -1, keepdims=True) + eps)).astype(x.dtype)


def _table_init(dim: int):
    return lambda k, s, t: jax.random.normal(k, s, t) / math.sqrt(dim)


def modulation(table: jax.Array, temb: jax.Array, n: int) -> list[jax.Array]:
    """``table (n, D) + temb (B, S, n·D)`` split into n tensors (B, S, D) (diffusers ``get_mod_params``)."""
    t = temb.reshape(*temb.shape[:-1], n, -1)
    values = table.astype(t.dtype) + t
    return [values[..., i, :] for i in range(n)]


class AdaLNSingle(nnx.Module):
    """``LTX2AdaLayerNormSingle``: timestep (already × multiplier) → ``(linear(SiLU(emb)) (…, n·D), emb (…, D))``.

    The sinusoid (``[cos, sin]``, 256 wide) is float32 and cast to the compute dtype before the MLP, as diffusers."""

    def __init__(self, dim: int, n: int, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        self.dtype = dtype
        self.timestep_embedder = TimestepEmbedding(256, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.linear = Linear(dim, n * dim, axes=("embed", "mlp"), dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        emb = self.timestep_embedder(timestep_sinusoid(t).astype(self.dtype))
        return self.linear(jax.nn.silu(emb)), emb


class BlockInputs(NamedTuple):
    """Everything a block needs besides the two token streams (shared by all blocks of a forward)."""

    temb: jax.Array  # (B, S, 6·D) video adaLN
    video_text: jax.Array  # (B, L, D)
    video_text_bias: jax.Array | None  # (B, 1, 1, L)
    video_rope: RopeTables
    temb_audio: jax.Array | None = None  # (B, S, 6·Da)
    audio_text: jax.Array | None = None
    audio_text_bias: jax.Array | None = None
    audio_rope: RopeTables | None = None
    ca_video_scale_shift: jax.Array | None = None  # (B, S, 4·D)
    ca_audio_scale_shift: jax.Array | None = None  # (B, S, 4·Da)
    ca_video_gate: jax.Array | None = None  # (B, S, D)
    ca_audio_gate: jax.Array | None = None  # (B, S, Da)
    ca_video_rope: RopeTables | None = None
    ca_audio_rope: RopeTables | None = None


class LTX2Block(nnx.Module):
    """Parameter names mirror diffusers (``attn1``, ``audio_attn1``, ``audio_to_video_attn``, ``ff`` …)."""

    def __init__(self, cfg, *, audio: bool, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        d, heads, hd = cfg.inner_dim, cfg.num_attention_heads, cfg.attention_head_dim
        self.eps = cfg.norm_eps
        self.scale_shift_table = param(rngs, _table_init(d), (6, d), (None, "embed"), param_dtype)
        self.attn1 = LTXAttention(d, heads, hd, rope_type=cfg.rope_type, **kw)
        self.attn2 = LTXAttention(d, heads, hd, kv_dim=cfg.cross_attention_dim, rope_type=cfg.rope_type, **kw)
        self.ff = GeluFeedForward(d, 4 * d, **kw)
        self.has_audio = audio
        if not audio:
            for name in ("audio_scale_shift_table", "audio_attn1", "audio_attn2", "audio_ff", "audio_to_video_attn",
                         "video_to_audio_attn", "video_a2v_cross_attn_scale_shift_table",
                         "audio_a2v_cross_attn_scale_shift_table"):
                setattr(self, name, nnx.data(None))
            return
        da, a_heads, a_hd = cfg.audio_inner_dim, cfg.audio_num_attention_heads, cfg.audio_attention_head_dim
        self.audio_scale_shift_table = param(rngs, _table_init(da), (6, da), (None, "embed"), param_dtype)
        self.audio_attn1 = LTXAttention(da, a_heads, a_hd, rope_type=cfg.rope_type, **kw)
        self.audio_attn2 = LTXAttention(da, a_heads, a_hd, kv_dim=cfg.audio_cross_attention_dim,
                                        rope_type=cfg.rope_type, **kw)
        self.audio_ff = GeluFeedForward(da, 4 * da, **kw)
        # both directions use the audio geometry (heads × head_dim of the audio stream)
        self.audio_to_video_attn = LTXAttention(d, a_heads, a_hd, kv_dim=da, rope_type=cfg.rope_type, **kw)
        self.video_to_audio_attn = LTXAttention(da, a_heads, a_hd, kv_dim=d, rope_type=cfg.rope_type, **kw)
        self.video_a2v_cross_attn_scale_shift_table = param(rngs, jax.random.normal, (5, d), (None, "embed"),
                                                            param_dtype)
        self.audio_a2v_cross_attn_scale_shift_table = param(rngs, jax.random.normal, (5, da), (None, "embed"),
                                                            param_dtype)

    def _stream_attention(self, x, table, temb, attn1, attn2, rope, text, bias, attention=None):
        shift, scale, gate = modulation(table[...][:3], _rows(temb, 6, 0, 3), 3)
        x = x + attn1(rms_norm(x, self.eps) * (1 + scale) + shift, q_rope=rope, attention=attention) * gate
        return x + attn2(rms_norm(x, self.eps), text, bias=bias)

    def _stream_ff(self, x, table, temb, ff):
        shift, scale, gate = modulation(table[...][3:6], _rows(temb, 6, 3, 6), 3)
        return x + ff(rms_norm(x, self.eps) * (1 + scale) + shift) * gate

    def __call__(self, vx: jax.Array, ax: jax.Array | None, c: BlockInputs, video_only: bool = False,
                 self_attention=None) -> tuple[jax.Array, jax.Array | None]:
        """``self_attention(q, k, v, bias)``: the video self-attention's kernel (default: local softmax; on a mesh
        with a ``context`` axis, ``sana_jax.parallel.ulysses``)."""
        run_audio = self.has_audio and not video_only and ax is not None
        vx = self._stream_attention(vx, self.scale_shift_table, c.temb, self.attn1, self.attn2, c.video_rope,
                                    c.video_text, c.video_text_bias, self_attention)
        if run_audio:
            ax = self._stream_attention(ax, self.audio_scale_shift_table, c.temb_audio, self.audio_attn1,
                                        self.audio_attn2, c.audio_rope, c.audio_text, c.audio_text_bias)
            vn, an = rms_norm(vx, self.eps), rms_norm(ax, self.eps)
            vt, at = self.video_a2v_cross_attn_scale_shift_table[...], self.audio_a2v_cross_attn_scale_shift_table[...]
            v_a2v_scale, v_a2v_shift, v_v2a_scale, v_v2a_shift = modulation(vt[:4], c.ca_video_scale_shift, 4)
            a_a2v_scale, a_a2v_shift, a_v2a_scale, a_v2a_shift = modulation(at[:4], c.ca_audio_scale_shift, 4)
            (a2v_gate,) = modulation(vt[4:], c.ca_video_gate, 1)
            (v2a_gate,) = modulation(at[4:], c.ca_audio_gate, 1)
            a2v = self.audio_to_video_attn(vn * (1 + v_a2v_scale) + v_a2v_shift, an * (1 + a_a2v_scale) + a_a2v_shift,
                                           q_rope=c.ca_video_rope, k_rope=c.ca_audio_rope)
            v2a = self.video_to_audio_attn(an * (1 + a_v2a_scale) + a_v2a_shift, vn * (1 + v_v2a_scale) + v_v2a_shift,
                                           q_rope=c.ca_audio_rope, k_rope=c.ca_video_rope)
            vx = vx + a2v_gate * a2v
            ax = ax + v2a_gate * v2a
            ax = self._stream_ff(ax, self.audio_scale_shift_table, c.temb_audio, self.audio_ff)
        vx = self._stream_ff(vx, self.scale_shift_table, c.temb, self.ff)
        return vx, ax


def _rows(temb: jax.Array, n: int, start: int, stop: int) -> jax.Array:
    """Rows ``start:stop`` of an (…, n·D) modulation embedding, kept flat: (…, (stop − start)·D)."""
    d = temb.shape[-1] // n
    return temb[..., start * d:stop * d]


__all__ = ["AdaLNSingle", "BlockInputs", "LTX2Block", "modulation", "rms_norm"]
