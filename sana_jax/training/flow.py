"""The flow-matching objective SANA-Video is trained with (training flow shift 3.0, logit-normal(0, 1) timesteps:
``NVlabs/Sana:configs/sana_video_config/Sana_2000M_480px_AdamW_fsdp.yaml``).

Rectified flow: ``x_σ = (1 − σ)·x0 + σ·ε`` and the network predicts the velocity ``v = ε − x0`` at timestep
``σ·1000``; the samplers in ``sana_jax.sampling`` integrate exactly this velocity. Training σ are drawn as
``u = sigmoid(N(mean, std))`` (or uniform) and then shifted like the inference schedules,
``σ = shift·u / (1 + (shift − 1)·u)``, which moves mass towards high noise for high-resolution latents.

Sampling starts at σ = 1 exactly (pure noise), where the layout of the video is decided, yet logit-normal(0, 1)
with shift 3 draws σ > 0.97 for under 1 % of samples. ``pure_noise_fraction`` replaces that fraction of the draws by
σ = 1 (a sana-jax option, not in SANA's recipe; ``docs/default-model.md``: a
quarter brings the demo DiT's σ = 1 error from worse than a constant to near the best possible).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sana_jax.errors import InputError
from sana_jax.training.config import TIMESTEP_SAMPLING


def shift_sigmas(u: jax.Array, shift: float) -> jax.Array:
    """The flow shift ``σ = s·u / (1 + (s − 1)·u)`` (identity for s = 1)."""
    return shift * u / (1.0 + (shift - 1.0) * u)


def sample_sigmas(key: jax.Array, batch: int, *, shift: float = 3.0, sampling: str = "logit_normal",
                  mean: float = 0.0, std: float = 1.0, pure_noise_fraction: float = 0.0) -> jax.Array:
    """Training noise levels σ ∈ (0, 1), shape (batch,), float32; each is σ = 1 instead with probability
    ``pure_noise_fraction``."""
    if not 0.0 <= pure_noise_fraction < 1.0:
        raise InputError(f"pure_noise_fraction must be in [0, 1), got {pure_noise_fraction}")
    if pure_noise_fraction > 0.0:  # split only then: with 0 the draws are the ones earlier versions made
        key, k_pure = jax.random.split(key)
    if sampling == "logit_normal":
        u = jax.nn.sigmoid(mean + std * jax.random.normal(key, (batch,), jnp.float32))
    elif sampling == "uniform":
        u = jax.random.uniform(key, (batch,), jnp.float32, 1e-5, 1.0)
    else:
        raise InputError(f"timestep sampling must be one of {TIMESTEP_SAMPLING}, got {sampling!r}")
    sigma = shift_sigmas(u, shift)
    if pure_noise_fraction > 0.0:
        sigma = jnp.where(jax.random.bernoulli(k_pure, pure_noise_fraction, (batch,)), 1.0, sigma)
    return sigma


def noisy_and_target(x0: jax.Array, noise: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(x_σ, v)`` for clean latents ``x0`` (B, ...), noise of the same shape and σ (B,)."""
    s = sigma.reshape((-1,) + (1,) * (x0.ndim - 1)).astype(x0.dtype)
    return (1.0 - s) * x0 + s * noise, noise - x0


def drop_text(key: jax.Array, text: jax.Array, mask: jax.Array, null_text: jax.Array, null_mask: jax.Array,
              rate: float) -> tuple[jax.Array, jax.Array]:
    """Replace each sample's caption by the empty prompt's with probability ``rate`` (classifier-free guidance
    training: the unconditional branch at inference is the empty negative prompt)."""
    if rate <= 0.0:
        return text, mask
    drop = jax.random.bernoulli(key, rate, (text.shape[0],))
    text = jnp.where(drop[:, None, None], jnp.broadcast_to(null_text, text.shape).astype(text.dtype), text)
    mask = jnp.where(drop[:, None], jnp.broadcast_to(null_mask, mask.shape).astype(mask.dtype), mask)
    return text, mask


def flow_matching_loss(predict, x0: jax.Array, text: jax.Array, mask: jax.Array, key: jax.Array, *,
                       shift: float = 3.0, sampling: str = "logit_normal", pure_noise_fraction: float = 0.0,
                       null_text=None, null_mask=None, text_dropout: float = 0.0,
                       loss_weight=None) -> jax.Array:
    """Mean squared error between ``predict(x_σ, text, σ·1000, mask)`` and ``v = ε − x0`` (float32); with
    ``loss_weight`` (σ (B,) → weights (B,), e.g. a preconditioning's), each sample's error is weighted by it."""
    k_sigma, k_noise, k_drop = jax.random.split(key, 3)
    sigma = sample_sigmas(k_sigma, x0.shape[0], shift=shift, sampling=sampling,
                          pure_noise_fraction=pure_noise_fraction)
    noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
    x_t, target = noisy_and_target(x0.astype(jnp.float32), noise, sigma)
    if text_dropout > 0.0:
        if null_text is None:
            raise InputError("text_dropout > 0 needs the empty prompt's embedding (null_text, null_mask)")
        text, mask = drop_text(k_drop, text, mask, null_text, null_mask, text_dropout)
    pred = predict(x_t, text, sigma * 1000.0, mask)
    return velocity_error(pred, target, sigma, loss_weight)


def velocity_error(pred: jax.Array, target: jax.Array, sigma: jax.Array, loss_weight=None) -> jax.Array:
    """Mean squared error of predicted velocities (float32), each sample's weighted by ``loss_weight(σ)`` when
    given (σ (B,) → weights (B,))."""
    error = jnp.square(pred.astype(jnp.float32) - target)
    if loss_weight is None:
        return jnp.mean(error)
    return jnp.mean(loss_weight(sigma).reshape((-1,) + (1,) * (error.ndim - 1)) * error)


def model_loss_weight(model):
    """The per-sample loss weight a DiT asks for: its preconditioning's ``loss_weight(σ)``, None for a plain DiT."""
    preconditioning = getattr(model.config, "preconditioning", None)
    return None if preconditioning is None else preconditioning.loss_weight
