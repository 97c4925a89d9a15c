"""A 2-D Gaussian mixture whose exact denoiser E[x0 | x_t] is closed-form: the known answer the distillation
algorithms are tested against, with tiny MLP students and critics and the measures of how well a sample
reproduces the mixture (per-mode weights, sliced Wasserstein distance)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class GaussianMixture(NamedTuple):
    means: jax.Array  # (K, D)
    std: float  # of every component, isotropic
    weights: jax.Array  # (K,), sums to 1

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        k_mode, k_noise = jax.random.split(key)
        mode = jax.random.choice(k_mode, self.weights.shape[0], (n,), p=self.weights)
        return self.means[mode] + self.std * jax.random.normal(k_noise, (n, self.means.shape[1]))

    def denoise(self, x_t: jax.Array, sigma: jax.Array) -> jax.Array:
        """E[x0 | x_t] for x_t = (1 − σ)·x0 + σ·ε: per component x_t ~ N((1 − σ)m_k, ((1 − σ)²s² + σ²)I), and
        E[x0 | x_t, k] = m_k + (1 − σ)s²/var · (x_t − (1 − σ)m_k), weighted by the posterior of k."""
        a = (1.0 - sigma)[:, None, None]  # (B, 1, 1)
        var = a**2 * self.std**2 + sigma[:, None, None] ** 2
        centred = x_t[:, None, :] - a * self.means[None]  # (B, K, D)
        logits = jnp.log(self.weights)[None] - 0.5 * jnp.sum(centred**2, -1) / var[..., 0]
        posterior = jax.nn.softmax(logits, axis=-1)[..., None]
        per_mode = self.means[None] + a * self.std**2 / var * centred
        return jnp.sum(posterior * per_mode, axis=1)

    def velocity(self, x_t: jax.Array, timestep: jax.Array) -> jax.Array:
        """The exact flow velocity v = (x_t − E[x0 | x_t]) / σ at timestep σ·1000 (B,)."""
        sigma = timestep / 1000.0
        return (x_t - self.denoise(x_t, sigma)) / sigma[:, None]


def three_modes() -> GaussianMixture:
    angles = jnp.array([0.0, 2.0, 4.0]) * jnp.pi / 3
    return GaussianMixture(2.0 * jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1), 0.25,
                           jnp.array([0.5, 0.3, 0.2]))


def mode_weights(x: jax.Array, means: jax.Array) -> np.ndarray:
    """The share of samples nearest to each mode."""
    nearest = jnp.argmin(jnp.sum((x[:, None] - means[None]) ** 2, -1), axis=1)
    return np.bincount(np.asarray(nearest), minlength=means.shape[0]) / x.shape[0]


def sliced_wasserstein(a: jax.Array, b: jax.Array, key: jax.Array, projections: int = 256) -> float:
    """Sliced 1-Wasserstein distance between two equal-size samples (random unit directions, sorted
    projections)."""
    d = jax.random.normal(key, (projections, a.shape[1]))
    d = d / jnp.linalg.norm(d, axis=1, keepdims=True)
    pa, pb = jnp.sort(a @ d.T, axis=0), jnp.sort(b @ d.T, axis=0)
    return float(jnp.mean(jnp.abs(pa - pb)))


# -- tiny networks ---------------------------------------------------------------------------------------------------


def mlp_init(key: jax.Array, sizes: tuple[int, ...]) -> list[tuple[jax.Array, jax.Array]]:
    keys = jax.random.split(key, len(sizes) - 1)
    return [(jax.random.normal(k, (m, n)) / np.sqrt(m), jnp.zeros(n)) for k, m, n in zip(keys, sizes[:-1], sizes[1:])]


def mlp(params, x: jax.Array) -> jax.Array:
    for w, b in params[:-1]:
        x = jax.nn.silu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def with_noise_level(x: jax.Array, timestep: jax.Array) -> jax.Array:
    """An MLP's input for (x_t, timestep = σ·1000): x_t and a few features of σ."""
    sigma = (timestep / 1000.0)[:, None]
    return jnp.concatenate([x, sigma, jnp.sin(3 * sigma), jnp.cos(3 * sigma)], axis=-1)
