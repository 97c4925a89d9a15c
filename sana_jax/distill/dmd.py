"""Distribution Matching Distillation (DMD2 form): the generator's loss and the critic's, as pure functions of
denoisers and explicit PRNG keys.

Three networks take part (Yin et al., "Improved Distribution Matching Distillation", arXiv 2405.14867;
``tianweiy/CausVid:causvid/dmd.py``, ``guandeh17/Self-Forcing:model/dmd.py``):

* the generator G (the few-step student) whose samples x are being trained;
* the *real* denoiser: the frozen teacher, with classifier-free guidance, x̂_real(x_t) ≈ E_data[x0 | x_t];
* the *fake* denoiser (the critic): a trainable copy of the teacher, fitted by :func:`critic_loss` to G's own
  samples, so that x̂_fake(x_t) ≈ E_G[x0 | x_t].

With x_t = (1 − σ)·x + σ·ε, Tweedie's formula gives x̂(x_t) = (x_t + σ²·∇log p_t(x_t)) / (1 − σ), so

    x̂_fake − x̂_real = σ² / (1 − σ) · (∇log p_t^G − ∇log p_t^data),

the gradient of KL(p_t^G ‖ p_t^data) with respect to a sample. The generator descends it through
``0.5·‖x − sg(x − g)‖²``, whose gradient with respect to x is g (over the number of elements), with
g = (x̂_fake − x̂_real) / mean|x − x̂_real| (DMD eq. 8's per-sample normaliser) and σ drawn uniformly in
[0.02, 0.98] and then flow-shifted (Self-Forcing: shift 5; LongSANA: 3). The loss value itself is not meaningful
(it is 0.5·mean(g²)); its gradient is.

A denoiser here is any ``fn(x_t, sigma) -> x0`` with ``sigma`` (B,); :func:`guided_denoiser` makes one from a
velocity network (``v = ε − x0``, so ``x0 = x_t − σ·v``) with classifier-free guidance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sana_jax.errors import InputError
from sana_jax.training.flow import noisy_and_target, shift_sigmas, velocity_error

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]  # (x_t, sigma (B,)) -> x0 estimate


class DMDSettings(NamedTuple):
    """Where σ is drawn for the generator and critic losses: uniform in [``low``, ``high``], then flow-shifted by
    ``shift`` (Self-Forcing ``configs/self_forcing_dmd.yaml``: timestep_shift 5; the bounds are DMD's
    ``min_step``/``max_step`` = 0.02/0.98 of 1000 timesteps)."""

    shift: float = 5.0
    low: float = 0.02
    high: float = 0.98


def _per_sample(sigma: jax.Array, like: jax.Array) -> jax.Array:
    return sigma.reshape((-1,) + (1,) * (like.ndim - 1)).astype(like.dtype)


def dmd_sigmas(key: jax.Array, batch: int, settings: DMDSettings = DMDSettings()) -> jax.Array:
    """Noise levels σ (batch,) float32 for DMD: uniform in [low, high], flow-shifted."""
    if not 0.0 < settings.low < settings.high < 1.0:
        raise InputError(f"DMD needs 0 < low < high < 1, got low={settings.low}, high={settings.high}")
    if settings.shift <= 0:
        raise InputError(f"DMD timestep shift must be > 0, got {settings.shift}")
    u = jax.random.uniform(key, (batch,), jnp.float32, settings.low, settings.high)
    return shift_sigmas(u, settings.shift)


def x0_from_velocity(x_t: jax.Array, velocity: jax.Array, sigma: jax.Array) -> jax.Array:
    """Rectified flow: v = ε − x0 and x_t = (1 − σ)·x0 + σ·ε give x0 = x_t − σ·v (σ (B,))."""
    return x_t - _per_sample(sigma, x_t) * velocity


def guided_denoiser(velocity: Callable[..., jax.Array], cond, uncond=None, guidance_scale: float = 1.0) -> Denoiser:
    """The x0 denoiser of a velocity network ``velocity(x_t, timestep, *cond)`` (timestep = σ·1000) with
    classifier-free guidance ``v_u + g·(v_c − v_u)`` (diffusers' and SANA's convention; Self-Forcing's
    ``guidance_scale`` s is this g = 1 + s). ``cond``/``uncond``: tuples of extra arguments (text, mask)."""
    guidance_scale = float(guidance_scale)
    if guidance_scale != 1.0 and uncond is None:
        raise InputError(f"guidance_scale={guidance_scale} needs the unconditional inputs (the empty prompt)")

    def denoise(x_t, sigma):
        t = sigma * 1000.0
        v = velocity(x_t, t, *cond).astype(jnp.float32)
        if guidance_scale != 1.0:
            v_u = velocity(x_t, t, *uncond).astype(jnp.float32)
            v = v_u + guidance_scale * (v - v_u)
        return x0_from_velocity(x_t.astype(jnp.float32), v, sigma)

    return denoise


def dmd_direction(x: jax.Array, real_x0: jax.Array, fake_x0: jax.Array) -> jax.Array:
    """DMD's per-sample gradient g = (x̂_fake − x̂_real) / mean|x − x̂_real| (float32, NaN/inf → 0 as in the
    references, for a normaliser of 0)."""
    x, real_x0, fake_x0 = (a.astype(jnp.float32) for a in (x, real_x0, fake_x0))
    axes = tuple(range(1, x.ndim))
    normaliser = jnp.mean(jnp.abs(x - real_x0), axis=axes, keepdims=True)
    return jnp.nan_to_num((fake_x0 - real_x0) / normaliser)


def distribution_matching_loss(x: jax.Array, key: jax.Array, real: Denoiser, fake: Denoiser,
                               settings: DMDSettings = DMDSettings()) -> tuple[jax.Array, dict]:
    """The generator's DMD loss on its samples ``x`` (B, ...): ``0.5·mean((x − sg(x − g))²)``.

    Gradients reach the generator only through ``x``: the noised input, both denoisers and g are computed from
    ``stop_gradient(x)`` (the real and fake networks are not trained by this loss). Returns (loss, metrics).
    """
    k_sigma, k_noise = jax.random.split(key)
    sigma = dmd_sigmas(k_sigma, x.shape[0], settings)
    x_const = jax.lax.stop_gradient(x).astype(jnp.float32)
    x_t, _ = noisy_and_target(x_const, jax.random.normal(k_noise, x.shape, jnp.float32), sigma)
    g = jax.lax.stop_gradient(dmd_direction(x_const, real(x_t, sigma), fake(x_t, sigma)))
    xf = x.astype(jnp.float32)
    loss = 0.5 * jnp.mean(jnp.square(xf - jax.lax.stop_gradient(xf - g)))
    return loss, {"dmd_grad_abs": jnp.mean(jnp.abs(g)), "dmd_sigma": jnp.mean(sigma)}


def critic_loss(fake_velocity: Callable[[jax.Array, jax.Array], jax.Array], x: jax.Array, key: jax.Array,
                settings: DMDSettings = DMDSettings(), loss_weight=None) -> jax.Array:
    """The critic's flow loss on the generator's samples: mean ‖fake_velocity(x_t, σ·1000) − (ε − x)‖² with
    ``x`` held constant (the generator is not trained by it) and σ drawn as for the generator loss
    (Self-Forcing ``DMD.critic_loss``, ``denoising_loss_type: flow``); ``loss_weight``: the critic's per-sample
    weight by σ (:func:`sana_jax.training.flow.model_loss_weight`), as its flow-matching training has it."""
    k_sigma, k_noise = jax.random.split(key)
    sigma = dmd_sigmas(k_sigma, x.shape[0], settings)
    x_const = jax.lax.stop_gradient(x).astype(jnp.float32)
    x_t, target = noisy_and_target(x_const, jax.random.normal(k_noise, x.shape, jnp.float32), sigma)
    return velocity_error(fake_velocity(x_t, sigma * 1000.0), target, sigma, loss_weight)
