"""The refine loop of the LTX-2 refiner (stage 2 of SANA-Video's 2K pipeline; docs/refiner.md), on normalised LTX-2
latents (channels-last (B, T, H, W, 128), e.g. SANA-Video 720p's output) and encoded prompts. Reference: diffusers
``LTX2Pipeline`` (``huggingface/diffusers:src/diffusers/pipelines/ltx2/pipeline_ltx2.py``) as SANA's refiner script
calls it, with the distilled sigmas of ``Lightricks/LTX-2:packages/ltx-pipelines/src/ltx_pipelines/utils/constants.py``:

1. optional ×2 spatial upsampling in *raw* latent space: ``normalize(up(denormalize(z)))`` (the VAE's
   per-channel statistics);
2. re-noise to the first distilled sigma: ``z = σ0·ε + (1 − σ0)·z``, σ0 = 0.909375;
3. the zero audio latent: SANA's recipe feeds ``audio_vae.latents_mean``, which normalises to exactly 0, so the
   audio tokens are ``σ0·ε_a`` of shape (B, L, 128) with L = round(25 · duration) (duration = frames / fps);
4. 3 Euler steps over σ = [0.909375, 0.725, 0.421875, 0], no guidance, float32 updates, the audio stream
   denoised jointly with the video (the LTX-2.0 DiT always runs both; its audio output is discarded).

This is diffusers' ``LTX2Pipeline`` called as SANA's script calls it (packed latents so that they are not
re-normalised, ``audio_latents`` = the audio VAE's mean, ``sigmas``, ``noise_scale=σ0``, ``guidance_scale=1``,
``frame_rate=16``); ``tests/test_two_stage.py`` checks the two agree.

**Joint (video, audio) state.** ``sana_jax.sampling.sample`` runs one compiled ``lax.scan`` over an *array*;
the refiner's state is two arrays. Both are flattened per sample and concatenated: ``x = [video.reshape(B, −1) |
audio.reshape(B, −1)]`` (B, N·C + L·C_a). The model function splits and reshapes them back, runs the DiT with
σ = t / 1000 (``sample`` feeds t = σ·1000, diffusers' timestep convention) and returns the two velocities
flattened the same way. The Euler update is elementwise, so this equals stepping the streams separately.
In video-only mode (``video_only=True``: no audio stream, no a↔v attention — an approximation, see
``models/ltx2_transformer.py``) the state is the video alone.

**On a mesh** (``refine_latents(..., mesh=)``) the DiT weights are placed by the logical-axis rules (heads/MLP over
``tensor``), the video tokens are sharded over ``context`` (batch over ``data`` when it divides) and the video
self-attention runs as Ulysses (``sana_jax.parallel.ulysses``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sana_jax.errors import InputError
from sana_jax.models.ltx2_transformer import audio_num_frames
from sana_jax.parallel.rules import shard_state
from sana_jax.pipelines.components import as_mesh
from sana_jax.sampling import DISTILLED_SIGMAS, distilled_schedule, renoise, sample
from sana_jax.text.ltx2_prompt import LTX2TextEmbeddings

DEFAULT_FPS = 16  # SANA-Video's frame rate; the refiner's RoPE positions are conditioned on it


@functools.lru_cache(maxsize=32)
def _refine_model_fn(graphdef, grid: tuple[int, int, int, int], audio_shape: tuple[int, int] | None, fps: float,
                     t_scale: float, mesh=None) -> Callable:
    """The ``sample`` model function for one (model, latent grid, audio length, fps). Cached, so that the same
    arguments give the same function object and ``sample`` reuses its compiled loop."""
    t, h, w, c = grid
    n_video = t * h * w * c

    def model_fn(params, x, timestep, cond):
        b = x.shape[0]
        model = nnx.merge(graphdef, params)
        video = x[:, :n_video].reshape(b, t, h, w, c).astype(model.dtype)
        audio = None if audio_shape is None else x[:, n_video:].reshape(b, *audio_shape).astype(model.dtype)
        sigma = timestep.astype(jnp.float32) / jnp.float32(t_scale)
        v_video, v_audio = model(video, audio, cond["video_text"], cond["audio_text"], sigma, fps=fps,
                                 video_text_mask=cond["mask"], audio_text_mask=cond["mask"],
                                 video_only=audio_shape is None, mesh=mesh)
        parts = [v_video.reshape(b, -1)]
        if audio_shape is not None:
            parts.append(v_audio.reshape(b, -1).astype(v_video.dtype))
        return jnp.concatenate(parts, axis=1)

    return model_fn


@functools.partial(jax.jit, static_argnums=0)
def _upsample_jit(graphdef, params, latents, mean, std):
    return nnx.merge(graphdef, params).upsample_normalized(latents, mean, std)


def upsample_latents(upsampler, latents, latents_mean, latents_std) -> jax.Array:
    """×2 spatial upsampling of normalised latents in raw latent space (``LTX2LatentUpsampler.upsample_normalized``),
    jitted (compiled once per shape)."""
    graphdef, params = nnx.split(upsampler)
    return _upsample_jit(graphdef, params, jnp.asarray(latents, jnp.float32), jnp.asarray(latents_mean),
                         jnp.asarray(latents_std))


def gathered(x: jax.Array) -> jax.Array:
    """A mesh-sharded result as one array on the default device (the VAE decodes on one device; on several hosts
    every process gets the whole array)."""
    from sana_jax.parallel.multihost import to_host

    return jnp.asarray(to_host(x))


def _as_split(model) -> tuple:
    """(graphdef, params, config) of a module or of an ``nnx.split`` pair."""
    if isinstance(model, nnx.Module):
        return (*nnx.split(model), model.config)
    graphdef, params = model
    return graphdef, params, nnx.merge(graphdef, params).config


def check_latents(shape: Sequence[int], channels: int, where: str = "latents") -> None:
    """An :class:`InputError` naming ``where`` unless ``shape`` is (B, T, H, W, ``channels``): normalised LTX-2
    latents, channels-last."""
    shape = tuple(shape)
    if len(shape) != 5 or shape[-1] != channels:
        got = f"{shape[-1]} channels (shape {shape})" if len(shape) == 5 else f"shape {shape}"
        raise InputError(f"{where}: got {got}; the refiner takes normalised LTX-2 latents (B, T, H, W, {channels}), "
                         "channels-last")


def _text_batch(text: LTX2TextEmbeddings | Sequence, batch: int) -> dict:
    video, audio, mask = (jnp.asarray(a) for a in text)
    if video.shape[0] != batch:
        if video.shape[0] != 1:
            raise InputError(f"{video.shape[0]} prompt embeddings for a batch of {batch} latents")
        video, audio, mask = (jnp.broadcast_to(a, (batch, *a.shape[1:])) for a in (video, audio, mask))
    return {"video_text": video, "audio_text": audio, "mask": mask}


def refine_latents(transformer, latents, text: LTX2TextEmbeddings | Sequence, *, key: jax.Array | None = None,
                   noise=None, audio_noise=None, fps: float = DEFAULT_FPS,
                   sigmas: Sequence[float] = DISTILLED_SIGMAS, upsampler=None, latents_mean=None,
                   latents_std=None, video_only: bool = False,
                   progress: Callable[[int], None] | None = None, mesh=None) -> jax.Array:
    """Stage 2 on normalised latents (module docstring); returns the refined normalised latents, float32.

    Args:
      transformer: an :class:`LTX2Transformer` or its ``nnx.split`` pair ``(graphdef, params)`` (pass the pair to
        avoid re-splitting a 19 B model on every call).
      latents: (B, T, H, W, C) normalised LTX-2 latents (channels-last), e.g. SANA-Video 720p's output.
      text: ``LTX2TextEmbeddings`` (video, audio, mask) from ``sana_jax.text.ltx2_prompt``; batch B or 1.
      key: PRNG key for the video noise and the audio noise (split in two) when ``noise`` / ``audio_noise`` are
        not given.
      noise: ε for the video re-noising, the shape of the (upsampled) latents.
      audio_noise: ε_a (B, L, audio_in_channels), L = ``audio_num_frames(8(T−1)+1, fps)``.
      fps: the frame rate the video and audio positions are conditioned on (SANA: 16); also sets L.
      sigmas: the distilled stage-2 sigmas (a trailing 0 is implied); σ0 = ``sigmas[0]`` is the re-noise level.
      upsampler: an ``LTX2LatentUpsampler`` to apply first (×2 in H and W), with the VAE's ``latents_mean`` /
        ``latents_std`` (its raw space).
      video_only: drop the audio stream and the a↔v attention (approximation; no audio noise is used).
      progress: called with the step index after each of the Euler steps.
      mesh: a ``jax.sharding.Mesh`` (or a spec string such as ``"data=2,context=4"``) to run the DiT on (module
        docstring); parameters not yet placed on it are placed by the logical-axis rules.
    """
    graphdef, params, cfg = _as_split(transformer)
    mesh = as_mesh(mesh)
    if mesh is not None:
        params = shard_state(params, mesh)  # a no-op for parameters already placed (from_pretrained(mesh=))
    check_latents(np.shape(latents), cfg.in_channels)
    latents = jnp.asarray(latents, jnp.float32)
    if upsampler is not None:
        if latents_mean is None or latents_std is None:
            raise InputError("upsampling needs the VAE's latents_mean and latents_std (it works in raw latent space)")
        latents = upsample_latents(upsampler, latents, latents_mean, latents_std)
    video_only = video_only or cfg.video_only
    b, t, h, w, c = latents.shape
    schedule = distilled_schedule(sigmas)
    sigma0 = float(list(sigmas)[0])
    if key is None and (noise is None or (audio_noise is None and not video_only)):
        raise InputError("refine_latents needs a PRNG `key` or explicit `noise` and `audio_noise`")
    key_v, key_a = jax.random.split(key) if key is not None else (None, None)
    if noise is None:
        noise = jax.random.normal(key_v, latents.shape, jnp.float32)
    elif tuple(np.shape(noise)) != latents.shape:
        raise InputError(f"noise must have the latents' shape {latents.shape}, got {tuple(np.shape(noise))}")
    state = [renoise(latents, noise, sigma0).reshape(b, -1)]
    audio_shape = None
    if not video_only:
        num_frames = (t - 1) * cfg.vae_scale_factors[0] + 1
        audio_shape = (audio_num_frames(num_frames, fps, cfg), cfg.audio_in_channels)
        if audio_noise is None:
            audio_noise = jax.random.normal(key_a, (b, *audio_shape), jnp.float32)
        elif tuple(np.shape(audio_noise)) != (b, *audio_shape):
            raise InputError(f"audio_noise must have shape {(b, *audio_shape)} ({num_frames} frames at {fps} fps), "
                             f"got {tuple(np.shape(audio_noise))}")
        # the zero audio latent (normalised audio VAE mean = 0) noised like the video: σ0·ε + (1 − σ0)·0
        state.append(renoise(jnp.zeros((b, *audio_shape), jnp.float32), audio_noise, sigma0).reshape(b, -1))
    x = jnp.concatenate(state, axis=1) if len(state) > 1 else state[0]
    model_fn = _refine_model_fn(graphdef, (t, h, w, c), audio_shape, float(fps), 1000.0, mesh)
    out = sample(model_fn, params, x, schedule=schedule, cond=_text_batch(text, b), guidance_scale=1.0,
                 progress=progress)
    return out[:, :t * h * w * c].reshape(b, t, h, w, c)


__all__ = ["DEFAULT_FPS", "check_latents", "gathered", "refine_latents", "upsample_latents"]
