"""The LTX-2 audio/video DiT (diffusers ``LTX2VideoTransformer3DModel``; ltx-core ``LTXModel``), the 19 B model
SANA-Video's 2K pipeline uses as its stage-2 refiner. References:
``huggingface/diffusers:src/diffusers/models/transformers/transformer_ltx2.py``,
``Lightricks/LTX-2:packages/ltx-core/src/ltx_core/model/transformer/model.py``.

API (channels-last)::

    model = LTX2Transformer(LTX2TransformerConfig.preset("ltx-2.0"), rngs=nnx.Rngs(0))
    v_video, v_audio = model(video, audio, video_text, audio_text, sigma, fps=16.0)

* ``video`` (B, T, H, W, 128) normalised LTX-2 latents (1 token per latent voxel), or (B, N, 128) tokens with
  explicit ``video_positions``; ``audio`` (B, L, 128) audio tokens (diffusers' packing of the (B, 8, L, 16) audio
  latent: ``a.transpose(0, 2, 1, 3).reshape(B, L, 128)``). For SANA's refiner the audio is the *zero audio latent*
  noised like the video: :func:`zero_audio_tokens`.
* ``video_text`` / ``audio_text`` (B, L_txt, caption_channels): the connectors' outputs (projected inside).
* ``sigma``: σ ∈ [0, 1] as a scalar, (B,) or per video token (B, N); the model multiplies by
  ``timestep_scale_multiplier`` (1000) itself — diffusers' ``timestep`` argument is σ·1000.
* Returns the flow **velocities** in the input layouts (``x0 = x − σ·v``) in the compute dtype; the audio one is
  ``None`` in video-only mode.

Video-only mode (``video_only=True`` at call time, or a model built from a config with ``video_only=True``, which
then holds no audio or a↔v weights: 13.04 B instead of 18.88 B parameters) runs the video stream alone. It is
exactly diffusers' ``isolate_modalities=True`` video output, but an **approximation** of the stock LTX-2 refiner
(which always runs both streams and mixes them by a↔v attention). Measured on the random tiny test configuration
(2 layers, float32, σ = 0.909375, audio = σ·ε): max|Δv| / max|v| = 0.60, ‖Δv‖/‖v‖ = 0.65 for the video velocity
(``tests/test_ltx2_transformer.py::test_video_only_difference``). With random weights this only shows that the a↔v
path is not negligible; it is not a quality estimate for the released weights.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sana_jax.config import ModelConfig
from sana_jax.errors import ConfigError, InputError
from sana_jax.models.ltx2_rope import audio_coords, rope_tables, video_coords
from sana_jax.models.ltx2_transformer_blocks import AdaLNSingle, BlockInputs, LTX2Block
from sana_jax.nn.attention import mask_to_bias
from sana_jax.nn.embeddings import CaptionProjection
from sana_jax.nn.layers import DType, Linear, layer_norm, param, stacked
from sana_jax.parallel import ulysses

DIFFUSERS_CLASS = "LTX2VideoTransformer3DModel"
STAGE2_SIGMA0 = 0.909375

# diffusers options that change the network and that LTX-2.0 does not use: value each must have.
_FIXED = {"gated_attn": False, "audio_gated_attn": False, "cross_attn_mod": False, "audio_cross_attn_mod": False,
          "use_prompt_embeddings": True, "ff_bias": True, "audio_ff_bias": True,
          "use_keyframes_abs_pos_embedding": False,
          "norm_elementwise_affine": False, "qk_norm": "rms_norm_across_heads", "activation_fn": "gelu-approximate",
          "attention_bias": True, "attention_out_bias": True, "patch_size": 1, "patch_size_t": 1,
          "audio_patch_size": 1, "audio_patch_size_t": 1}


@dataclasses.dataclass(frozen=True)
class LTX2TransformerConfig(ModelConfig):
    """Hyper-parameters named as in diffusers' ``transformer/config.json`` (defaults = diffusers' defaults; the
    released LTX-2.0 model is :meth:`preset`). ``video_only`` is ours: build without audio and a↔v weights."""

    CLASS_NAME = DIFFUSERS_CLASS
    FIXED = _FIXED
    OURS = ("video_only",)

    in_channels: int = 128
    out_channels: int = 128
    num_attention_heads: int = 32
    attention_head_dim: int = 128
    cross_attention_dim: int = 4096
    vae_scale_factors: tuple[int, int, int] = (8, 32, 32)
    pos_embed_max_pos: int = 20
    base_height: int = 2048
    base_width: int = 2048
    audio_in_channels: int = 128
    audio_out_channels: int = 128
    audio_num_attention_heads: int = 32
    audio_attention_head_dim: int = 64
    audio_cross_attention_dim: int = 2048
    audio_scale_factor: int = 4
    audio_pos_embed_max_pos: int = 20
    audio_sampling_rate: int = 16000
    audio_hop_length: int = 160
    num_layers: int = 48
    norm_eps: float = 1e-6
    caption_channels: int = 3840
    rope_theta: float = 10000.0
    rope_double_precision: bool = True
    causal_offset: int = 1
    timestep_scale_multiplier: float = 1000
    cross_attn_timestep_scale_multiplier: float = 1000
    rope_type: str = "interleaved"
    video_only: bool = False

    def __post_init__(self):
        object.__setattr__(self, "vae_scale_factors", tuple(int(s) for s in self.vae_scale_factors))
        if self.rope_type not in ("split", "interleaved"):
            raise ConfigError(f"rope_type must be 'split' or 'interleaved', got {self.rope_type!r}")
        if self.cross_attention_dim != self.inner_dim:
            raise ConfigError(f"cross_attention_dim {self.cross_attention_dim} must equal the video width "
                              f"{self.inner_dim} (captions are projected to it)")
        if self.audio_cross_attention_dim != self.audio_inner_dim:
            raise ConfigError(f"audio_cross_attention_dim {self.audio_cross_attention_dim} must equal the audio width "
                              f"{self.audio_inner_dim}")
        for name in ("attention_head_dim", "audio_attention_head_dim"):
            if getattr(self, name) % 2:
                raise ConfigError(f"{name} must be even for RoPE, got {getattr(self, name)}")

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def audio_inner_dim(self) -> int:
        return self.audio_num_attention_heads * self.audio_attention_head_dim

    @property
    def audio_latents_per_second(self) -> float:
        return float(self.audio_sampling_rate) / float(self.audio_hop_length) / float(self.audio_scale_factor)

    @classmethod
    def preset(cls, name: str = "ltx-2.0", **over) -> "LTX2TransformerConfig":
        """``"ltx-2.0"``: the released 19 B model (split RoPE, a↔v gate multiplier 1000)."""
        if name != "ltx-2.0":
            raise ConfigError(f"unknown LTX-2 transformer preset {name!r}; expected 'ltx-2.0'")
        return cls(rope_type="split", **over)

    @classmethod
    def _prepare(cls, config: dict, source: str) -> dict:
        for out, into in (("out_channels", "in_channels"), ("audio_out_channels", "audio_in_channels")):
            if config.get(out) is None and into in config:  # diffusers: None means as many as the input
                config[out] = config[into]
        return config

    @classmethod
    def from_native(cls, transformer: Mapping[str, Any], source: str = "metadata") -> "LTX2TransformerConfig":
        """ltx-core's ``config["transformer"]`` (safetensors metadata of a native checkpoint)."""
        for key in ("apply_gated_attention", "cross_attention_adaln", "caption_proj_before_connector"):
            if transformer.get(key):
                raise ConfigError(f"{source}: {key}=true (LTX-2.3) is not supported")
        g = transformer.get
        max_pos = g("positional_embedding_max_pos") or [20, 2048, 2048]
        audio_max = g("audio_positional_embedding_max_pos") or [20]
        try:
            fields = dict(in_channels=g("in_channels", 128), out_channels=g("out_channels", 128),
                          num_attention_heads=g("num_attention_heads", 32),
                          attention_head_dim=g("attention_head_dim", 128),
                          cross_attention_dim=g("cross_attention_dim", 4096), pos_embed_max_pos=max_pos[0],
                          base_height=max_pos[1], base_width=max_pos[2], audio_in_channels=g("audio_in_channels", 128),
                          audio_out_channels=g("audio_out_channels", 128),
                          audio_num_attention_heads=g("audio_num_attention_heads", 32),
                          audio_attention_head_dim=g("audio_attention_head_dim", 64),
                          audio_cross_attention_dim=g("audio_cross_attention_dim", 2048),
                          audio_pos_embed_max_pos=audio_max[0], num_layers=g("num_layers", 48),
                          norm_eps=g("norm_eps", 1e-6), caption_channels=g("caption_channels", 3840),
                          rope_theta=g("positional_embedding_theta", 10000.0),
                          rope_double_precision=g("frequencies_precision", False) == "float64",
                          timestep_scale_multiplier=g("timestep_scale_multiplier", 1000),
                          cross_attn_timestep_scale_multiplier=g("av_ca_timestep_scale_multiplier", 1),
                          rope_type=g("rope_type", "interleaved"))
        except (TypeError, IndexError) as e:  # positional_embedding_max_pos not a list of 3
            raise ConfigError(f"{source}: invalid transformer config ({e})") from e
        return cls.build(fields, source)


def audio_num_frames(num_frames: int, fps: float, config: LTX2TransformerConfig | None = None) -> int:
    """Audio latent length for ``num_frames`` pixel frames at ``fps``: ``round(duration · 25)`` (diffusers
    ``LTX2Pipeline``: 16 kHz, hop 160, 4× latent compression)."""
    per_second = (config or LTX2TransformerConfig()).audio_latents_per_second
    return round(num_frames / fps * per_second)


def zero_audio_tokens(key: jax.Array, batch: int, num_frames: int, fps: float, *, sigma0: float = STAGE2_SIGMA0,
                      config: LTX2TransformerConfig | None = None, dtype: DType = jnp.float32) -> jax.Array:
    """The refiner's audio input (docs/refiner.md): the normalised audio latent is exactly 0, noised like the video
    ``σ0·ε + (1 − σ0)·0`` → (B, L, audio_in_channels) with L = :func:`audio_num_frames` (≈ 25 per second)."""
    cfg = config or LTX2TransformerConfig()
    length = audio_num_frames(num_frames, fps, cfg)
    noise = jax.random.normal(key, (batch, length, cfg.audio_in_channels), jnp.float32)
    return (jnp.float32(sigma0) * noise).astype(dtype)


class LTX2Transformer(nnx.Module):
    """The dual-stream DiT. Blocks are stacked (``nnx.vmap``, leading ``layers`` axis) and run with ``lax.scan``;
    ``remat=True`` rematerialises each block in the backward pass. Parameter names mirror diffusers'."""

    def __init__(self, config: LTX2TransformerConfig, *, dtype: DType = jnp.float32,
                 param_dtype: DType = jnp.float32, rngs: nnx.Rngs, remat: bool = False):
        cfg = self.config = config
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype, self.remat = dtype, remat
        d, da = cfg.inner_dim, cfg.audio_inner_dim
        audio = not cfg.video_only
        self.proj_in = Linear(cfg.in_channels, d, axes=(None, "embed"), **kw)
        self.caption_projection = CaptionProjection(cfg.caption_channels, d, **kw)
        self.time_embed = AdaLNSingle(d, 6, **kw)
        self.scale_shift_table = param(rngs, lambda k, s, t: jax.random.normal(k, s, t) / math.sqrt(d), (2, d),
                                       (None, "embed"), param_dtype)
        self.proj_out = Linear(d, cfg.out_channels, axes=("embed", None), **kw)
        if audio:
            self.audio_proj_in = Linear(cfg.audio_in_channels, da, axes=(None, "embed"), **kw)
            self.audio_caption_projection = CaptionProjection(cfg.caption_channels, da, **kw)
            self.audio_time_embed = AdaLNSingle(da, 6, **kw)
            self.audio_scale_shift_table = param(rngs, lambda k, s, t: jax.random.normal(k, s, t) / math.sqrt(da),
                                                 (2, da), (None, "embed"), param_dtype)
            self.audio_proj_out = Linear(da, cfg.audio_out_channels, axes=("embed", None), **kw)
            self.av_cross_attn_video_scale_shift = AdaLNSingle(d, 4, **kw)
            self.av_cross_attn_audio_scale_shift = AdaLNSingle(da, 4, **kw)
            self.av_cross_attn_video_a2v_gate = AdaLNSingle(d, 1, **kw)
            self.av_cross_attn_audio_v2a_gate = AdaLNSingle(da, 1, **kw)

        self.blocks = stacked(cfg.num_layers, lambda r: LTX2Block(cfg, audio=audio, dtype=dtype,
                                                                  param_dtype=param_dtype, rngs=r), rngs)

    @property
    def has_audio(self) -> bool:
        return not self.config.video_only

    # -- inputs ---------------------------------------------------------------------------------------------------

    @staticmethod
    def _sigma(sigma, batch: int, tokens: int, name: str) -> jax.Array:
        """σ as (B, 1) per sample or (B, N) per token, float32."""
        s = jnp.asarray(sigma, jnp.float32)
        if s.ndim == 0:
            s = jnp.broadcast_to(s, (batch,))
        if s.ndim == 1:
            s = s[:, None]
        if s.ndim != 2 or s.shape[0] != batch or s.shape[1] not in (1, tokens):
            raise InputError(f"{name} must be a scalar, (B={batch},) or (B, N={tokens}) per token, "
                             f"got shape {tuple(jnp.shape(sigma))}")
        return s

    def _text(self, proj: CaptionProjection, text: jax.Array, name: str) -> jax.Array:
        if text is None or text.ndim != 3 or text.shape[-1] != self.config.caption_channels:
            raise InputError(f"{name} must be (B, L, {self.config.caption_channels}), got "
                             f"{None if text is None else tuple(text.shape)}")
        return proj(text.astype(self.dtype))

    def _video_tokens(self, video: jax.Array, positions, fps: float) -> tuple[jax.Array, jax.Array, tuple | None]:
        cfg = self.config
        if video.shape[-1] != cfg.in_channels:
            raise InputError(f"video has {video.shape[-1]} channels; this model takes {cfg.in_channels} "
                             "(channels-last)")
        if video.ndim == 5:
            b, t, h, w, _ = video.shape
            tokens = video.reshape(b, t * h * w, -1)
            grid = (t, h, w)
            if positions is None:
                positions = video_coords(1, t, h, w, fps=fps, scale_factors=cfg.vae_scale_factors,
                                         causal_offset=cfg.causal_offset)  # batch 1: the tables broadcast
        elif video.ndim == 3:
            if positions is None:
                raise InputError("video given as (B, N, C) tokens needs video_positions (B, 3, N, 2)")
            tokens, grid = video, None
        else:
            raise InputError(f"video must be (B, T, H, W, C) latents or (B, N, C) tokens, got {video.shape}")
        positions = jnp.asarray(positions, jnp.float32)
        if positions.ndim not in (3, 4) or positions.shape[1] != 3 or positions.shape[2] != tokens.shape[1]:
            raise InputError(f"video_positions must be (B, 3, N={tokens.shape[1]}, 2), got {positions.shape}")
        return tokens, positions, grid

    def _audio_tokens(self, audio: jax.Array, positions) -> tuple[jax.Array, jax.Array]:
        cfg = self.config
        if audio is None or audio.ndim != 3 or audio.shape[-1] != cfg.audio_in_channels:
            raise InputError(f"audio must be (B, L, {cfg.audio_in_channels}) tokens, got "
                             f"{None if audio is None else tuple(audio.shape)} (zero_audio_tokens makes the "
                             "refiner's input; or call with video_only=True)")
        if positions is None:
            positions = audio_coords(1, audio.shape[1], scale_factor=cfg.audio_scale_factor,
                                     hop_length=cfg.audio_hop_length, sampling_rate=cfg.audio_sampling_rate,
                                     causal_offset=cfg.causal_offset)
        positions = jnp.asarray(positions, jnp.float32)
        if positions.ndim not in (3, 4) or positions.shape[1] != 1 or positions.shape[2] != audio.shape[1]:
            raise InputError(f"audio_positions must be (B, 1, L={audio.shape[1]}, 2), got {positions.shape}")
        return audio, positions

    # -- forward --------------------------------------------------------------------------------------------------

    def __call__(self, video: jax.Array, audio: jax.Array | None, video_text: jax.Array,
                 audio_text: jax.Array | None, sigma, *, audio_sigma=None, fps: float = 24.0,
                 video_text_mask: jax.Array | None = None, audio_text_mask: jax.Array | None = None,
                 video_positions: jax.Array | None = None, audio_positions: jax.Array | None = None,
                 video_only: bool = False, use_cross_timestep: bool = False, mesh=None
                 ) -> tuple[jax.Array, jax.Array | None]:
        """Velocities of both streams (see the module docstring for shapes).

        Args:
          audio_sigma: the audio stream's σ (default: ``sigma``, which must then be per sample).
          fps: frame rate the video RoPE positions are conditioned on (SANA's recipe: 16); a Python number (the
            default positions are built on the host, so it is static under ``jit``).
          video_text_mask / audio_text_mask: (B, L_txt) {1 keep, 0 drop} → −10000 attention bias (diffusers).
          video_positions / audio_positions: explicit (B, 3, N, 2) / (B, 1, L, 2) RoPE bounds (diffusers'
            ``video_coords`` / ``audio_coords``); default: built from the grid, ``fps`` and the config.
          video_only: skip the audio stream and the a↔v attention (approximation, module docstring).
          use_cross_timestep: a↔v modulation from the *other* modality's σ (ltx-core ≥ 1.0 / LTX-2.3 behaviour)
            instead of the own σ (diffusers' LTX-2.0 default); identical when both share σ.
          mesh: a ``jax.sharding.Mesh`` the call runs on (under ``jit``, parameters placed by
            ``sana_jax.parallel.rules``): the video tokens are kept sharded over its ``context`` axis (batch over
            ``data``) and the video self-attention runs as Ulysses (``sana_jax.parallel.ulysses``; the
            XLA-partitioned attention when the heads do not divide by the context size).
        """
        cfg = self.config
        run_audio = self.has_audio and not video_only
        tokens, vpos, grid = self._video_tokens(video, video_positions, fps)
        b, n = tokens.shape[:2]
        t_mult = jnp.float32(cfg.timestep_scale_multiplier)
        gate_factor = float(cfg.cross_attn_timestep_scale_multiplier) / float(cfg.timestep_scale_multiplier)
        v_sigma = self._sigma(sigma, b, n, "sigma")
        temb, v_emb = self.time_embed(v_sigma * t_mult)
        heads, a_heads = cfg.num_attention_heads, cfg.audio_num_attention_heads
        rope_kw = dict(theta=cfg.rope_theta, double_precision=cfg.rope_double_precision, rope_type=cfg.rope_type)
        inputs = dict(temb=temb, video_text=self._text(self.caption_projection, video_text, "video_text"),
                      video_text_bias=mask_to_bias(video_text_mask),
                      video_rope=rope_tables(vpos, cfg.inner_dim, (cfg.pos_embed_max_pos, cfg.base_height,
                                                                   cfg.base_width), heads=heads, **rope_kw))
        x = self.proj_in(tokens.astype(self.dtype))
        self_attention = None
        if mesh is not None:
            x = ulysses.shard_tokens(x, mesh)
            self_attention = ulysses.self_attention_fn(mesh, heads)
        ax = a_emb = None
        if run_audio:
            audio, apos = self._audio_tokens(audio, audio_positions)
            if audio.shape[0] != b:
                raise InputError(f"audio batch {audio.shape[0]} differs from the video batch {b}")
            if audio_sigma is None and v_sigma.shape[1] != 1:
                raise InputError("per-token sigma (B, N) needs an explicit audio_sigma")
            a_sigma = v_sigma if audio_sigma is None else self._sigma(audio_sigma, b, audio.shape[1], "audio_sigma")
            temb_audio, a_emb = self.audio_time_embed(a_sigma * t_mult)
            if use_cross_timestep:
                if v_sigma.shape[1] != 1 or a_sigma.shape[1] != 1:
                    raise InputError("use_cross_timestep needs per-sample sigma and audio_sigma")
                v_ca, a_ca = a_sigma * t_mult, v_sigma * t_mult
            else:
                v_ca, a_ca = v_sigma * t_mult, a_sigma * t_mult
            cross_max = (max(cfg.pos_embed_max_pos, cfg.audio_pos_embed_max_pos),)
            ca_dim = cfg.audio_cross_attention_dim
            inputs.update(
                temb_audio=temb_audio, audio_text=self._text(self.audio_caption_projection, audio_text, "audio_text"),
                audio_text_bias=mask_to_bias(audio_text_mask),
                audio_rope=rope_tables(apos, cfg.audio_inner_dim, (cfg.audio_pos_embed_max_pos,), heads=a_heads,
                                       **rope_kw),
                ca_video_scale_shift=self.av_cross_attn_video_scale_shift(v_ca)[0],
                ca_audio_scale_shift=self.av_cross_attn_audio_scale_shift(a_ca)[0],
                ca_video_gate=self.av_cross_attn_video_a2v_gate(v_ca * gate_factor)[0],
                ca_audio_gate=self.av_cross_attn_audio_v2a_gate(a_ca * gate_factor)[0],
                ca_video_rope=rope_tables(vpos[:, 0:1], ca_dim, cross_max, heads=heads, **rope_kw),
                ca_audio_rope=rope_tables(apos[:, 0:1], ca_dim, cross_max, heads=a_heads, **rope_kw))
            ax = self.audio_proj_in(audio.astype(self.dtype))
        x, ax = self.run_blocks(x, ax, BlockInputs(**inputs), video_only=not run_audio,
                                self_attention=self_attention)
        out = self._head(x, v_emb, self.scale_shift_table, self.proj_out)
        if grid is not None:
            out = out.reshape(b, *grid, -1)
        a_out = self._head(ax, a_emb, self.audio_scale_shift_table, self.audio_proj_out) if run_audio else None
        return out, a_out

    def run_blocks(self, x: jax.Array, ax: jax.Array | None, inputs: BlockInputs, *, video_only: bool = False,
                   self_attention=None) -> tuple[jax.Array, jax.Array | None]:
        graphdef, state = nnx.split(self.blocks)

        def body(carry, block_state):
            vx, a = carry
            block = nnx.merge(graphdef, block_state)
            return block(vx, a, inputs, video_only=video_only, self_attention=self_attention), None

        if self.remat:
            body = jax.checkpoint(body, prevent_cse=False)
        (x, ax), _ = jax.lax.scan(body, (x, ax), state)
        return x, ax

    def _head(self, x: jax.Array, emb: jax.Array, table, proj: Linear) -> jax.Array:
        """``LayerNorm(no affine, 1e-6)``, ``x·(1 + scale) + shift`` with ``(shift, scale) = table + emb``, proj."""
        values = table[...].astype(x.dtype) + emb[:, :, None, :]
        shift, scale = values[:, :, 0], values[:, :, 1]
        return proj(layer_norm(x, 1e-6) * (1 + scale) + shift)


__all__ = ["LTX2Transformer", "LTX2TransformerConfig", "audio_num_frames", "zero_audio_tokens", "STAGE2_SIGMA0",
           "DIFFUSERS_CLASS"]
