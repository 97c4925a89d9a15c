"""Wan2.1 text-to-video DiT (diffusers ``WanTransformer3DModel``), channels-last, blocks stacked and scanned.

References: ``huggingface/diffusers:src/diffusers/models/transformers/transformer_wan.py`` (the names this module's
parameter tree mirrors) and ``Wan-Video/Wan2.1:wan/modules/model.py`` (``WanModel``, the original). Softmax
self-attention with a 3-axis RoPE (the same as SANA-Video's, :mod:`sana_jax.nn.rope`), q/k RMSNorm across all heads,
an un-gated cross-attention to the text after an affine LayerNorm, a tanh-GELU FFN; adaLN modulation from one
timestep per sample or per latent frame (the causal students of CausVid / Self-Forcing).

Precision: time embedding, modulation, norms and the residual stream are float32 and the matmuls/attention run in
``dtype`` (the original Wan, which keeps these parts in float32 under bf16 autocast). ``float32_conditioning=False``
computes the time embedding and modulation in ``dtype`` and keeps the residual stream in ``dtype``, as the causal
checkpoints run (CausVid and Self-Forcing cast the whole network to bf16).

The self-attention takes optional extra keys/values in front of the block's own (``history``) and a boolean mask:
the block-causal forms in :mod:`sana_jax.models.wan_causal` are built on that.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sana_jax.config import ModelConfig, key_error
from sana_jax.errors import ConfigError, InputError
from sana_jax.nn.attention import softmax_attention
from sana_jax.nn.embeddings import CaptionProjection, TimestepEmbedding, timestep_sinusoid
from sana_jax.nn.layers import DType, Linear, RMSNorm, layer_norm, modulate, param, stacked
from sana_jax.nn.ltx_attention import GeluFeedForward
from sana_jax.nn.patches import check_latent_shape, embed_patches, patch_tuple, unpatchify
from sana_jax.nn.rope import apply_rope, rope_3d

DIFFUSERS_CLASS = "WanTransformer3DModel"
ORIGINAL_CLASS = "WanModel"  # the original Wan-AI/Wan2.1-T2V-* config.json


@dataclasses.dataclass(frozen=True)
class WanConfig(ModelConfig):
    """Hyper-parameters of a Wan2.1 DiT, named as in diffusers' ``transformer/config.json``. The original
    ``config.json`` (``"_class_name": "WanModel"``: ``dim``, ``num_heads``, ``in_dim`` …) is read too."""

    CLASS_NAME = DIFFUSERS_CLASS
    ALSO_READS = (ORIGINAL_CLASS,)
    FIXED = {"qk_norm": "rms_norm_across_heads",  # every released Wan2.1 model
             "image_dim": None, "added_kv_proj_dim": None,  # the I2V / FLF2V image branch is not implemented
             "pos_embed_seq_len": None}

    patch_size: tuple[int, int, int] = (1, 2, 2)
    num_attention_heads: int = 40
    attention_head_dim: int = 128
    in_channels: int = 16
    out_channels: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    ffn_dim: int = 13824
    num_layers: int = 40
    cross_attn_norm: bool = True
    eps: float = 1e-6
    rope_max_seq_len: int = 1024

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def __post_init__(self):
        object.__setattr__(self, "patch_size", patch_tuple(self.patch_size))
        if self.attention_head_dim % 2:
            raise ConfigError(f"attention_head_dim must be even for RoPE, got {self.attention_head_dim}")

    @classmethod
    def preset(cls, name: str) -> "WanConfig":
        """The released text-to-video models: ``"1.3B"`` or ``"14B"`` (Wan-AI/Wan2.1-T2V-*)."""
        if name == "1.3B":
            return cls(num_attention_heads=12, ffn_dim=8960, num_layers=30)
        if name == "14B":
            return cls()
        raise ConfigError(f"unknown Wan2.1 preset {name!r}; expected '1.3B' or '14B'")

    @classmethod
    def _prepare(cls, config: dict, source: str) -> dict:
        if config.get("_class_name") == ORIGINAL_CLASS:
            config = _from_original(config, source)
        if config.get("out_channels") is None and "in_channels" in config:
            config["out_channels"] = config["in_channels"]
        return config

    def _extra_keys(self) -> dict[str, Any]:
        return {"added_kv_proj_dim": None}


def _from_original(config: dict, source: str) -> dict:
    """The original ``WanModel`` config.json (``Wan-Video/Wan2.1:wan/modules/model.py`` arguments) in diffusers keys;
    ``patch_size``, ``text_dim``, ``qk_norm``, ``cross_attn_norm`` take their constructor defaults there."""
    kind = config.get("model_type", "t2v")
    if kind != "t2v":
        raise key_error(source, "model_type", f"{kind!r} is not supported (only 't2v': the image branch of "
                                              "i2v / flf2v is not implemented)")
    if config.get("text_len", 512) != 512:
        raise key_error(source, "text_len", f"{config['text_len']!r} is not supported (only 512)")
    dim, heads = config.get("dim", 2048), config.get("num_heads", 16)
    if not isinstance(dim, int) or not isinstance(heads, int) or heads < 1 or dim % heads:
        raise key_error(source, "dim", f"{dim!r} must be a multiple of num_heads {heads!r}")
    renamed = {"in_dim": "in_channels", "out_dim": "out_channels", "ffn_dim": "ffn_dim", "freq_dim": "freq_dim",
               "num_layers": "num_layers", "eps": "eps",
               # not saved by WanModel (ignore_for_config) but constructor arguments: read when a file states them
               "text_dim": "text_dim", "patch_size": "patch_size", "cross_attn_norm": "cross_attn_norm"}
    out = {new: config[old] for old, new in renamed.items() if old in config}
    return {**out, "num_attention_heads": heads, "attention_head_dim": dim // heads}


# -- attention --------------------------------------------------------------------------------------------------


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Softmax attention, q (B, N, H, d) against k/v (B, L, H, d); ``mask`` (bool, True = attend) broadcastable to
    (B, H, N, L); cuDNN's fused kernel on GPU in 16 bits (:func:`sana_jax.nn.attention.softmax_attention`)."""
    return softmax_attention(q, k, v, mask=mask)


class WanAttention(nnx.Module):
    """``attn1`` / ``attn2``: q/k/v/out projections with bias and q/k RMSNorm over all heads (eps = config eps)."""

    def __init__(self, cfg: WanConfig, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        d = cfg.inner_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.heads = cfg.num_attention_heads
        self.to_q = Linear(d, d, axes=("embed", "heads"), **kw)
        self.to_k = Linear(d, d, axes=("embed", "heads"), **kw)
        self.to_v = Linear(d, d, axes=("embed", "heads"), **kw)
        self.to_out = Linear(d, d, axes=("heads", "embed"), **kw)
        self.norm_q = RMSNorm(d, eps=cfg.eps, axis_name="heads", param_dtype=param_dtype, rngs=rngs)
        self.norm_k = RMSNorm(d, eps=cfg.eps, axis_name="heads", param_dtype=param_dtype, rngs=rngs)

    def _heads(self, a: jax.Array) -> jax.Array:
        return a.reshape(*a.shape[:-1], self.heads, -1)

    def query(self, x: jax.Array) -> jax.Array:
        return self._heads(self.norm_q(self.to_q(x)))

    def key_value(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Keys (RMS-normed) and values, (B, L, heads, d); for the text, computed once per prompt when streaming."""
        return self._heads(self.norm_k(self.to_k(x))), self._heads(self.to_v(x))

    def out(self, o: jax.Array) -> jax.Array:
        return self.to_out(o.reshape(*o.shape[:-2], -1))


class AffineLayerNorm(nnx.Module):
    """LayerNorm with ``weight`` and ``bias`` (diffusers ``FP32LayerNorm``): statistics and affine in float32."""

    def __init__(self, dim: int, *, eps: float, param_dtype: DType, rngs: nnx.Rngs):
        self.eps = eps
        self.weight = param(rngs, nnx.initializers.ones, (dim,), ("embed",), param_dtype)
        self.bias = param(rngs, nnx.initializers.zeros, (dim,), ("embed",), param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = layer_norm(x.astype(jnp.float32), self.eps)
        return y * self.weight[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)


class WanBlock(nnx.Module):
    """One DiT block (diffusers ``WanTransformerBlock``): modulated self-attention with RoPE, cross-attention to the
    text (affine LayerNorm, no modulation, no gate), modulated FFN."""

    def __init__(self, cfg: WanConfig, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        d = cfg.inner_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.eps = cfg.eps
        self.dtype = dtype
        self.scale_shift_table = param(rngs, lambda k, s, t: jax.random.normal(k, s, t) / math.sqrt(d),
                                       (1, 6, d), (None, None, "embed"), param_dtype)
        self.attn1 = WanAttention(cfg, **kw)
        self.attn2 = WanAttention(cfg, **kw)
        self.norm2 = (AffineLayerNorm(d, eps=cfg.eps, param_dtype=param_dtype, rngs=rngs) if cfg.cross_attn_norm
                      else nnx.data(None))
        self.ffn = GeluFeedForward(d, cfg.ffn_dim, **kw)

    def self_attention_kv(self, h: jax.Array, rope) -> tuple[jax.Array, jax.Array, jax.Array]:
        """q, k (RoPE applied) and v of the modulated tokens ``h`` (B, N, D), each (B, N, heads, d)."""
        q = apply_rope(self.attn1.query(h), *rope).astype(h.dtype)
        k, v = self.attn1.key_value(h)
        return q, apply_rope(k, *rope).astype(h.dtype), v

    def __call__(self, x: jax.Array, e0: jax.Array, text_kv: tuple[jax.Array, jax.Array], rope,
                 history: tuple[jax.Array, jax.Array] | None = None, mask: jax.Array | None = None
                 ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """``x`` (B, T, S, D) residual stream (S tokens per latent frame); ``e0`` (B, 1 or T, 1, 6, D) the projected
        timestep; ``text_kv`` the text's keys/values (:meth:`WanAttention.key_value`); ``rope`` (cos, sin) of the
        T·S tokens. ``history``: keys (RoPE applied) and values (B, M, heads, d) attended before the block's own;
        ``mask`` (bool, broadcastable to (B, heads, T·S, M + T·S)). Returns the new stream and the block's own
        (post-RoPE) keys and values."""
        b, t, s, d = x.shape
        mods = self.scale_shift_table[...].astype(e0.dtype) + e0
        shift1, scale1, gate1, shift2, scale2, gate2 = (mods[..., i, :] for i in range(6))

        h = modulate(layer_norm(x, self.eps), shift1, scale1).astype(self.dtype)
        q, k, v = self.self_attention_kv(h.reshape(b, t * s, d), rope)
        keys, values = (k, v) if history is None else (jnp.concatenate([history[0], k], 1),
                                                        jnp.concatenate([history[1], v], 1))
        attn = self.attn1.out(attention(q, keys, values, mask)).reshape(b, t, s, d)
        x = x + (attn * gate1).astype(x.dtype)

        h = x.reshape(b, t * s, d)
        h = (self.norm2(h) if self.norm2 is not None else h).astype(self.dtype)
        x = x + self.attn2.out(attention(self.attn2.query(h), *text_kv)).reshape(b, t, s, d).astype(x.dtype)

        h = modulate(layer_norm(x, self.eps), shift2, scale2).astype(self.dtype)
        x = x + (self.ffn(h) * gate2).astype(x.dtype)
        return x, (k, v)


class WanTransformer(nnx.Module):
    """The Wan2.1 DiT. ``model(latents, text, timestep)`` → flow velocity (ε − x₀), all channels-last.

    Blocks are built with ``nnx.vmap`` (one stacked parameter set, leading ``layers`` axis) and run with
    ``lax.scan``; ``remat=True`` rematerialises each block in the backward pass (training).
    """

    def __init__(self, config: WanConfig, *, dtype: DType = jnp.float32, param_dtype: DType = jnp.float32,
                 rngs: nnx.Rngs, remat: bool = False, float32_conditioning: bool = True):
        cfg = self.config = config
        d = cfg.inner_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype
        self.remat = remat
        self.float32_conditioning = float32_conditioning
        pt, ph, pw = cfg.patch_size
        self.patch_embedding_kernel = param(rngs, nnx.initializers.lecun_normal(in_axis=(0, 1, 2, 3), out_axis=4),
                                            (pt, ph, pw, cfg.in_channels, d), (None, None, None, None, "embed"),
                                            param_dtype)
        self.patch_embedding_bias = param(rngs, nnx.initializers.zeros, (d,), ("embed",), param_dtype)
        cond_dtype = jnp.float32 if float32_conditioning else dtype
        self.time_embedder = TimestepEmbedding(cfg.freq_dim, d, dtype=cond_dtype, param_dtype=param_dtype, rngs=rngs)
        self.time_proj = Linear(d, 6 * d, axes=("embed", "mlp"), dtype=cond_dtype, param_dtype=param_dtype,
                                rngs=rngs)
        self.text_embedder = CaptionProjection(cfg.text_dim, d, **kw)
        self.blocks = stacked(cfg.num_layers, lambda r: WanBlock(cfg, dtype=dtype, param_dtype=param_dtype, rngs=r),
                              rngs)
        self.scale_shift_table = param(rngs, lambda k, s, t: jax.random.normal(k, s, t) / math.sqrt(d),
                                       (1, 2, d), (None, None, "embed"), param_dtype)
        self.proj_out = Linear(d, pt * ph * pw * cfg.out_channels, axes=("embed", None), **kw)

    def set_float32_conditioning(self, on: bool) -> None:
        """Switch the time embedding, modulation and residual stream between float32 (the original Wan) and the
        compute dtype (the causal checkpoints, cast to bf16 whole by CausVid / Self-Forcing); no weight changes."""
        self.float32_conditioning = bool(on)
        cond = jnp.float32 if on else self.dtype
        for linear in (self.time_embedder.linear_1, self.time_embedder.linear_2, self.time_proj):
            linear.dtype = cond

    @property
    def stream_dtype(self):
        """The residual stream's dtype: float32, or ``dtype`` without ``float32_conditioning``."""
        return jnp.float32 if self.float32_conditioning else self.dtype

    # -- pieces, public so the causal forms can reuse them --------------------------------------------------------

    def check_latents(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """Validate a (B, T, H, W, C) latent shape; return the post-patch grid (T', H', W')."""
        return check_latent_shape(shape, self.config.in_channels, self.config.patch_size)

    def rope(self, grid: tuple[int, int, int], t_offset: int | jax.Array = 0, max_frames: int | None = None):
        """cos/sin of the 3-axis RoPE for the token grid, frames from ``t_offset`` (absolute when streaming).
        Rows of the temporal table below ``rope_max_seq_len`` are those of the reference; ``max_frames`` builds it
        longer (streams past 1024 latent frames)."""
        cfg = self.config
        if max(grid[1:]) > cfg.rope_max_seq_len:
            raise InputError(f"post-patch grid {grid} exceeds rope_max_seq_len {cfg.rope_max_seq_len}")
        length = max(cfg.rope_max_seq_len, max_frames or 0)
        if isinstance(t_offset, int) and t_offset + grid[0] > length:
            raise InputError(f"latent frames {t_offset}..{t_offset + grid[0]} exceed the RoPE table ({length})")
        return rope_3d(grid, cfg.attention_head_dim, max_seq_len=length, t_offset=t_offset)

    def embed_patches(self, x: jax.Array) -> jax.Array:
        """Conv3d with kernel = stride = patch, as a reshape and a matmul: (B,T,H,W,C) → (B,T',H'·W',D) in the
        residual stream's dtype."""
        x = embed_patches(x, self.patch_embedding_kernel[...], self.patch_embedding_bias[...], self.config.patch_size,
                          self.dtype)
        return x.astype(self.stream_dtype)

    def embed_timestep(self, timestep: jax.Array, batch: int, frames: int) -> tuple[jax.Array, jax.Array]:
        """``e0`` (B, L, 1, 6, D) for the blocks and ``e`` (B, L, 1, D) for the head, L = 1 (one timestep per
        sample) or T' (per latent frame). The timestep is in [0, 1000] (σ·1000)."""
        timestep = jnp.asarray(timestep)
        if timestep.ndim == 0:
            timestep = jnp.broadcast_to(timestep, (batch,))
        if timestep.ndim == 1:
            timestep = timestep[:, None]
        if timestep.ndim != 2 or timestep.shape[0] != batch or timestep.shape[1] not in (1, frames):
            raise InputError(f"timestep must be (B,) or (B, T'={frames}) per latent frame, got {timestep.shape}")
        cond = self.time_embedder.linear_1.dtype
        sinusoid = timestep_sinusoid(timestep, self.config.freq_dim).astype(cond)
        e = self.time_embedder(sinusoid)
        e0 = self.time_proj(jax.nn.silu(e))
        d = self.config.inner_dim
        return e0.reshape(batch, -1, 1, 6, d), e[:, :, None, :]

    def embed_text(self, text: jax.Array) -> jax.Array:
        """UMT5 features (B, 512, text_dim), zero rows after the prompt → (B, 512, D)."""
        if text.ndim != 3 or text.shape[-1] != self.config.text_dim:
            raise InputError(f"text embeddings must be (B, L, {self.config.text_dim}), got {text.shape}")
        return self.text_embedder(text.astype(self.dtype))

    def text_kv(self, text: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Every layer's cross-attention keys and values of the text, (layers, B, L, heads, d) each."""
        context = self.embed_text(text)
        graphdef, state = nnx.split(self.blocks)

        def body(carry, block_state):
            return carry, nnx.merge(graphdef, block_state).attn2.key_value(context)

        _, kv = jax.lax.scan(body, None, state)
        return kv

    def run_blocks(self, x: jax.Array, e0: jax.Array, text_kv: tuple[jax.Array, jax.Array], rope,
                   mask: jax.Array | None = None) -> jax.Array:
        """Every block over the whole token sequence (``mask``: the block-causal forms' attention mask, bool,
        broadcastable to (B, heads, N, N); None: bidirectional), scanned over depth."""
        graphdef, state = nnx.split(self.blocks)

        def body(h, xs):
            block_state, k, v = xs
            h, _ = nnx.merge(graphdef, block_state)(h, e0, (k, v), rope, mask=mask)
            return h, None

        if self.remat:
            body = jax.checkpoint(body, prevent_cse=False)
        x, _ = jax.lax.scan(body, x, (state, *text_kv))
        return x

    def unpatchify(self, x: jax.Array, e: jax.Array, grid: tuple[int, int, int]) -> jax.Array:
        """Final modulated norm (uses ``e``, not ``e0``), ``proj_out``, patches back to (B,T,H,W,C)."""
        table = self.scale_shift_table[...].astype(e.dtype)
        shift, scale = table[:, 0] + e, table[:, 1] + e
        x = self.proj_out(modulate(layer_norm(x, self.config.eps), shift, scale).astype(self.dtype))
        return unpatchify(x, grid, self.config.patch_size)

    def __call__(self, latents: jax.Array, text: jax.Array, timestep: jax.Array) -> jax.Array:
        """Predict the flow velocity.

        Args:
          latents: (B, T, H, W, 16) channels-last, normalised Wan-VAE latents.
          text: (B, 512, text_dim) UMT5 features, rows after the prompt set to zero (attended to: no mask).
          timestep: (B,) in [0, 1000] (σ·1000), or (B, T') per latent frame.

        Returns:
          (B, T, H, W, C_out) in the compute dtype.
        """
        grid = self.check_latents(latents.shape)
        b = latents.shape[0]
        x = self.embed_patches(latents)
        e0, e = self.embed_timestep(timestep, b, grid[0])
        x = self.run_blocks(x, e0, self.text_kv(text), self.rope(grid))
        return self.unpatchify(x, e, grid)
