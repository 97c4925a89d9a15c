"""SANA-Video transformer (diffusers ``SanaVideoTransformer3DModel``), channels-last, blocks stacked and scanned.

Reference: ``huggingface/diffusers:src/diffusers/models/transformers/transformer_sana_video.py`` (original:
``NVlabs/Sana:diffusion/model/nets/sana_multi_scale_video.py``). Inputs and outputs are
(B, T, H, W, C) latents; the parameter tree mirrors diffusers' names so the key table in
``converters/sana_video.py`` stays a plain rename + transpose.
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
from sana_jax.nn.attention import mask_to_bias, softmax_attention
from sana_jax.nn.embeddings import AdaLayerNormSingle, CaptionProjection
from sana_jax.nn.glumb import GLUMBTempConv
from sana_jax.nn.layers import DType, Linear, RMSNorm, layer_norm, modulate, param, stacked
from sana_jax.nn.patches import check_latent_shape, embed_patches, patch_tuple, unpatchify
from sana_jax.kernels.dispatch import linear_attention
from sana_jax.nn.rope import rope_3d

DIFFUSERS_CLASS = "SanaVideoTransformer3DModel"


@dataclasses.dataclass(frozen=True)
class SanaVideoConfig(ModelConfig):
    """Hyper-parameters of a SANA-Video transformer, named as in diffusers' ``transformer/config.json``."""

    CLASS_NAME = DIFFUSERS_CLASS
    ALSO_READS = ("SanaVideoCausalTransformer3DModel",)
    FIXED = {"guidance_embeds": False,  # the guidance-distilled variant
             "norm_elementwise_affine": False}  # used by no released model

    in_channels: int = 16
    out_channels: int = 16
    num_attention_heads: int = 20
    attention_head_dim: int = 112
    num_layers: int = 20
    num_cross_attention_heads: int = 20
    cross_attention_head_dim: int = 112
    cross_attention_dim: int = 2240
    caption_channels: int = 2304
    mlp_ratio: float = 3.0
    attention_bias: bool = False
    sample_size: int = 30
    patch_size: tuple[int, int, int] = (1, 2, 2)
    norm_eps: float = 1e-6
    qk_norm: str | None = "rms_norm_across_heads"
    rope_max_seq_len: int = 1024

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def ffn_hidden(self) -> int:
        return int(self.mlp_ratio * self.inner_dim)

    def __post_init__(self):
        object.__setattr__(self, "patch_size", patch_tuple(self.patch_size))
        if self.cross_attention_dim != self.inner_dim:
            raise ConfigError(f"cross_attention_dim {self.cross_attention_dim} must equal heads × head_dim "
                              f"= {self.inner_dim} (captions are projected to the model width)")
        if self.num_cross_attention_heads * self.cross_attention_head_dim != self.inner_dim:
            raise ConfigError("num_cross_attention_heads × cross_attention_head_dim must equal the model width "
                              f"{self.inner_dim}")
        if self.qk_norm not in ("rms_norm_across_heads", None):
            raise ConfigError(f"qk_norm {self.qk_norm!r} is not supported (expected 'rms_norm_across_heads' or null)")
        if self.attention_head_dim % 2:
            raise ConfigError(f"attention_head_dim must be even for RoPE, got {self.attention_head_dim}")

    @classmethod
    def preset(cls, name: str) -> "SanaVideoConfig":
        """The released models: ``"480p"`` (Wan2.1 VAE, 16 ch, patch 1×2×2) or ``"720p"`` (LTX-2 VAE, 128 ch)."""
        if name == "480p":
            return cls()
        if name == "720p":
            return cls(in_channels=128, out_channels=128, patch_size=(1, 1, 1), sample_size=22)
        raise ConfigError(f"unknown preset {name!r}; expected '480p' or '720p'")

    @classmethod
    def _prepare(cls, config: dict, source: str) -> dict:
        if "cross_attention_dim" in config and config["cross_attention_dim"] is None:
            raise key_error(source, "cross_attention_dim", "models without cross-attention are not supported")
        if config.get("out_channels") is None and "in_channels" in config:
            config["out_channels"] = config["in_channels"]
        return config

    def _extra_keys(self) -> dict[str, Any]:
        return {"dropout": 0.0, "guidance_embeds_scale": 0.1, "interpolation_scale": None}


def _qk_norms(cfg: SanaVideoConfig, param_dtype: DType, rngs: nnx.Rngs) -> tuple:
    """``norm_q``, ``norm_k``: RMSNorm across all heads (``qk_norm="rms_norm_across_heads"``), or none."""
    if cfg.qk_norm is None:
        return nnx.data(None), nnx.data(None)
    return tuple(RMSNorm(cfg.inner_dim, eps=1e-5, axis_name="heads", param_dtype=param_dtype, rngs=rngs)
                 for _ in range(2))


class LinearSelfAttention(nnx.Module):
    """``attn1``: q/k/v projections, q/k RMSNorm across all heads, ReLU linear attention with RoPE, ``to_out``."""

    def __init__(self, cfg: SanaVideoConfig, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        d = cfg.inner_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.heads = cfg.num_attention_heads
        self.to_q = Linear(d, d, axes=("embed", "heads"), use_bias=cfg.attention_bias, **kw)
        self.to_k = Linear(d, d, axes=("embed", "heads"), use_bias=cfg.attention_bias, **kw)
        self.to_v = Linear(d, d, axes=("embed", "heads"), use_bias=cfg.attention_bias, **kw)
        self.to_out = Linear(d, d, axes=("heads", "embed"), **kw)
        self.norm_q, self.norm_k = _qk_norms(cfg, param_dtype, rngs)

    def __call__(self, x: jax.Array, rope: tuple[jax.Array, jax.Array]) -> jax.Array:
        b, n, d = x.shape
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        if self.norm_q is not None:
            q, k = self.norm_q(q), self.norm_k(k)
        split = lambda a: a.reshape(b, n, self.heads, -1)  # noqa: E731  heads-major channels
        out = linear_attention(split(q), split(k), split(v), *rope)  # Pallas kernel on GPU, XLA elsewhere
        return self.to_out(out.reshape(b, n, d))


class CrossAttention(nnx.Module):
    """``attn2``: softmax attention of the video tokens to the projected caption, −10000 mask bias."""

    def __init__(self, cfg: SanaVideoConfig, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        d = cfg.inner_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.heads = cfg.num_cross_attention_heads
        self.to_q = Linear(d, d, axes=("embed", "heads"), **kw)
        self.to_k = Linear(cfg.cross_attention_dim, d, axes=("embed", "heads"), **kw)
        self.to_v = Linear(cfg.cross_attention_dim, d, axes=("embed", "heads"), **kw)
        self.to_out = Linear(d, d, axes=("heads", "embed"), **kw)
        self.norm_q, self.norm_k = _qk_norms(cfg, param_dtype, rngs)

    def key_value(self, text: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Keys and values (B, L, heads, d) of the caption; computed once per prompt when streaming."""
        b, length, _ = text.shape
        k, v = self.to_k(text), self.to_v(text)
        if self.norm_k is not None:
            k = self.norm_k(k)
        return k.reshape(b, length, self.heads, -1), v.reshape(b, length, self.heads, -1)

    def __call__(self, x: jax.Array, text: jax.Array, bias: jax.Array | None) -> jax.Array:
        b, n, d = x.shape
        q = self.to_q(x)
        if self.norm_q is not None:
            q = self.norm_q(q)
        k, v = self.key_value(text)
        out = softmax_attention(q.reshape(b, n, self.heads, -1), k, v, bias)
        return self.to_out(out.reshape(b, n, d))


class SanaVideoBlock(nnx.Module):
    """One DiT block (diffusers ``SanaVideoTransformerBlock``): modulated linear self-attention, un-modulated
    cross-attention, modulated Mix-FFN."""

    def __init__(self, cfg: SanaVideoConfig, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        d = cfg.inner_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.eps = cfg.norm_eps
        self.scale_shift_table = param(rngs, lambda k, s, t: jax.random.normal(k, s, t) / math.sqrt(d),
                                       (6, d), (None, "embed"), param_dtype)
        self.attn1 = LinearSelfAttention(cfg, **kw)
        self.attn2 = CrossAttention(cfg, **kw)
        self.ff = GLUMBTempConv(d, cfg.ffn_hidden, **kw)

    def __call__(self, x: jax.Array, t6: jax.Array, text: jax.Array, text_bias: jax.Array | None,
                 rope: tuple[jax.Array, jax.Array], grid: tuple[int, int, int]) -> jax.Array:
        """``x`` (B, T, S, D) with S = H·W tokens per frame; ``t6`` (B, 1 or T, 1, 6·D)."""
        b, t, s, d = x.shape
        mods = self.scale_shift_table[...].astype(x.dtype) + t6.reshape(*t6.shape[:-1], 6, d)
        shift1, scale1, gate1, shift2, scale2, gate2 = (mods[..., i, :] for i in range(6))

        h = modulate(layer_norm(x, self.eps), shift1, scale1)
        x = x + gate1 * self.attn1(h.reshape(b, t * s, d), rope).reshape(b, t, s, d)

        x = x + self.attn2(x.reshape(b, t * s, d), text, text_bias).reshape(b, t, s, d)

        h = modulate(layer_norm(x, self.eps), shift2, scale2)
        h = self.ff(h.reshape(b, *grid, d)).reshape(b, t, s, d)
        return x + gate2 * h


class SanaVideoTransformer(nnx.Module):
    """The SANA-Video DiT. ``model(latents, text, timestep, text_mask)`` → flow velocity, all channels-last.

    Blocks are built with ``nnx.vmap`` (one stacked parameter set, leading ``layers`` axis) and run with
    ``lax.scan`` so compile time does not grow with depth. ``remat=True`` rematerialises each block in the
    backward pass (training).
    """

    def __init__(self, config: SanaVideoConfig, *, dtype: DType = jnp.float32, param_dtype: DType = jnp.float32,
                 rngs: nnx.Rngs, remat: bool = False):
        cfg = self.config = config
        d = cfg.inner_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype
        self.remat = remat
        pt, ph, pw = cfg.patch_size
        self.patch_embedding_kernel = param(rngs, nnx.initializers.lecun_normal(in_axis=(0, 1, 2, 3), out_axis=4),
                                            (pt, ph, pw, cfg.in_channels, d), (None, None, None, None, "embed"),
                                            param_dtype)
        self.patch_embedding_bias = param(rngs, nnx.initializers.zeros, (d,), ("embed",), param_dtype)
        self.time_embed = AdaLayerNormSingle(d, **kw)
        self.caption_projection = CaptionProjection(cfg.caption_channels, d, **kw)
        self.caption_norm = RMSNorm(d, eps=1e-5, param_dtype=param_dtype, rngs=rngs)

        self.blocks = stacked(cfg.num_layers, lambda r: SanaVideoBlock(cfg, dtype=dtype, param_dtype=param_dtype,
                                                                       rngs=r), rngs)
        self.scale_shift_table = param(rngs, lambda k, s, t: jax.random.normal(k, s, t) / math.sqrt(d),
                                       (2, d), (None, "embed"), param_dtype)
        self.proj_out = Linear(d, pt * ph * pw * cfg.out_channels, axes=("embed", None), **kw)

    # -- pieces, public so pipelines / streaming can reuse them -------------------------------------------------

    def check_latents(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """Validate a (B, T, H, W, C) latent shape; return the post-patch grid (T', H', W')."""
        cfg = self.config
        grid = check_latent_shape(shape, cfg.in_channels, cfg.patch_size)
        if max(grid) > cfg.rope_max_seq_len:
            raise InputError(f"post-patch grid {grid} exceeds rope_max_seq_len {cfg.rope_max_seq_len}")
        return grid

    def embed_patches(self, x: jax.Array) -> jax.Array:
        """Conv3d with kernel = stride = patch, as a reshape and a matmul: (B,T,H,W,C) → (B,T',H'·W',D)."""
        return embed_patches(x, self.patch_embedding_kernel[...], self.patch_embedding_bias[...],
                             self.config.patch_size, self.dtype)

    def embed_timestep(self, timestep: jax.Array, batch: int, frames: int) -> tuple[jax.Array, jax.Array]:
        """``t6`` (B, L, 1, 6D) and ``emb`` (B, L, 1, D) with L = 1 (one timestep per sample) or T' (per frame)."""
        timestep = jnp.asarray(timestep)
        if timestep.ndim == 0:
            timestep = jnp.broadcast_to(timestep, (batch,))
        if timestep.ndim == 1:
            timestep = timestep[:, None]
        if timestep.ndim != 2 or timestep.shape[0] != batch or timestep.shape[1] not in (1, frames):
            raise InputError(f"timestep must be (B,) or (B, T'={frames}) per latent frame, got {timestep.shape}")
        t6, emb = self.time_embed(timestep)
        return t6[:, :, None, :], emb[:, :, None, :]

    def embed_text(self, text: jax.Array) -> jax.Array:
        """Caption features (B, L, caption_channels) → (B, L, D): projection then RMSNorm."""
        if text.ndim != 3 or text.shape[-1] != self.config.caption_channels:
            raise InputError(f"text embeddings must be (B, L, {self.config.caption_channels}), got {text.shape}")
        return self.caption_norm(self.caption_projection(text.astype(self.dtype)))

    def run_blocks(self, x: jax.Array, t6: jax.Array, text: jax.Array, text_bias: jax.Array | None,
                   rope: tuple[jax.Array, jax.Array], grid: tuple[int, int, int]) -> jax.Array:
        graphdef, state = nnx.split(self.blocks)

        def body(h, block_state):
            block = nnx.merge(graphdef, block_state)
            return block(h, t6, text, text_bias, rope, grid), None

        if self.remat:
            body = jax.checkpoint(body, prevent_cse=False)
        x, _ = jax.lax.scan(body, x, state)
        return x

    def unpatchify(self, x: jax.Array, emb: jax.Array, grid: tuple[int, int, int]) -> jax.Array:
        """Final modulated norm (uses ``emb``, not ``t6``), ``proj_out``, and patches back to (B,T,H,W,C)."""
        table = self.scale_shift_table[...].astype(x.dtype)
        shift, scale = table[0] + emb, table[1] + emb
        return unpatchify(self.proj_out(modulate(layer_norm(x, 1e-6), shift, scale)), grid, self.config.patch_size)

    def __call__(self, latents: jax.Array, text: jax.Array, timestep: jax.Array,
                 text_mask: jax.Array | None = None) -> jax.Array:
        """Predict the flow velocity.

        Args:
          latents: (B, T, H, W, C_in) channels-last.
          text: (B, L, caption_channels) caption features (Gemma-2 last hidden state).
          timestep: (B,) in [0, 1000] (σ·1000), or (B, T') per latent frame (image-to-video, streaming).
          text_mask: (B, L) with 1 for real tokens, 0 for padding (padding gets a −10000 attention bias).

        Returns:
          (B, T, H, W, C_out) in the compute dtype.
        """
        grid = self.check_latents(latents.shape)
        b = latents.shape[0]
        rope = rope_3d(grid, self.config.attention_head_dim, max_seq_len=self.config.rope_max_seq_len)
        x = self.embed_patches(latents)
        t6, emb = self.embed_timestep(timestep, b, grid[0])
        caption = self.embed_text(text)
        bias = mask_to_bias(text_mask)
        x = self.run_blocks(x, t6, caption, bias, rope, grid)
        return self.unpatchify(x, emb, grid)
