"""The distillation algorithms on problems with a known answer.

* DMD's generator gradient equals its closed form when data, generator and critic are Gaussians.
* A one-step generator trained by DMD against the exact denoiser of a 2-D Gaussian mixture (the teacher) and a
  critic fitted to its samples reproduces the mixture: each mode's weight within ±5 points, and a sliced
  Wasserstein distance to the data close to the distance between two samples of the data itself.
* ODE regression: a student trained on the teacher's recorded ODE trajectories maps noise in one step to the
  teacher's ODE endpoint for that noise.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sana_jax.distill.dmd import DMDSettings, critic_loss, distribution_matching_loss, x0_from_velocity
from sana_jax.distill.ode import ode_regression_loss, teacher_trajectory
from tests.gaussian_mixture import mlp, mlp_init, mode_weights, sliced_wasserstein, three_modes, with_noise_level

MIXTURE = three_modes()
EVAL = 4096


def gaussian_x0(x_t, sigma, mean, std):
    """E[x0 | x_t] for x0 ~ N(mean, std²·I)."""
    a = (1.0 - sigma)[:, None]
    var = a**2 * std**2 + sigma[:, None] ** 2
    return mean + a * std**2 / var * (x_t - a * mean)


def test_dmd_generator_gradient_is_closed_form():
    """Generator x = μ + s·z, data N(μ_r, s_r²), critic = the exact denoiser of the generator's own law (a
    function of μ and s that the loss must not differentiate). ∂L/∂μ = Σ g / N and ∂L/∂s = Σ g·z / N with
    g = (x̂_fake − x̂_real) / mean|x − x̂_real| per sample."""
    z = jax.random.normal(jax.random.key(0), (64, 3))
    mean_r, std_r = jnp.array([1.0, -2.0, 0.5]), 0.7
    seen = {}

    def real(x_t, sigma):
        seen["x_t"], seen["sigma"] = x_t, sigma
        return gaussian_x0(x_t, sigma, mean_r, std_r)

    def loss(theta):
        x = theta["mean"] + theta["std"] * z
        fake = lambda x_t, sigma: gaussian_x0(x_t, sigma, theta["mean"], theta["std"])  # noqa: E731
        value, _ = distribution_matching_loss(x, jax.random.key(1), real, fake, DMDSettings(shift=3.0))
        return value, (seen["x_t"], seen["sigma"])

    theta = {"mean": jnp.array([0.2, 0.1, -0.3]), "std": jnp.asarray(1.3)}
    (_, (x_t, sigma)), grads = jax.value_and_grad(loss, has_aux=True)(theta)

    x, x_t, sigma = (np.asarray(a, np.float64) for a in (theta["mean"] + theta["std"] * z, x_t, sigma))
    real_x0 = np.asarray(gaussian_x0(x_t, sigma, np.asarray(mean_r, np.float64), std_r))
    fake_x0 = np.asarray(gaussian_x0(x_t, sigma, np.asarray(theta["mean"], np.float64), float(theta["std"])))
    g = (fake_x0 - real_x0) / np.mean(np.abs(x - real_x0), axis=1, keepdims=True)
    np.testing.assert_allclose(grads["mean"], g.sum(0) / g.size, rtol=1e-4)
    np.testing.assert_allclose(grads["std"], np.sum(g * np.asarray(z)) / g.size, rtol=1e-4)
    assert 0.02 < sigma.min() and sigma.max() < 0.999  # σ uniform in [0.02, 0.98], shifted by 3
    # descending moves the generator's mean towards the data's
    assert np.all(np.sign(-np.asarray(grads["mean"])) == np.sign(np.asarray(mean_r - theta["mean"])))


# -- DMD on a Gaussian mixture ------------------------------------------------------------------------------------

BATCH = 256
SETTINGS = DMDSettings(shift=1.0)
DMD_STEPS = 3000
# DMD2 / Self-Forcing: β1 = 0. The generator's rate decays to 0: a one-step generator is a continuous map of a
# unimodal Gaussian, so some mass always bridges the modes; the decay lets it thin them out (at a constant rate
# 1000 steps leave ~9 % of samples more than 4 σ from every mode and a distance of ~4× the floor).
GEN_OPT = optax.adam(optax.cosine_decay_schedule(1e-3, DMD_STEPS), b1=0.0)
CRITIC_OPT = optax.adam(1e-3, b1=0.0)
CRITIC_UPDATES = 5  # per generator update (dfake_gen_update_ratio)


def fake_velocity(critic, x_t, timestep):
    return mlp(critic, with_noise_level(x_t, timestep))


def critic_update(carry, key):
    gen, critic, c_opt = carry
    k_z, k_loss = jax.random.split(key)
    x = mlp(gen, jax.random.normal(k_z, (BATCH, 2)))
    grads = jax.grad(lambda c: critic_loss(functools.partial(fake_velocity, c), x, k_loss, SETTINGS))(critic)
    updates, c_opt = CRITIC_OPT.update(grads, c_opt, critic)
    return (gen, optax.apply_updates(critic, updates), c_opt), None


def dmd_update(carry, key):
    gen, g_opt, critic, c_opt = carry
    keys = jax.random.split(key, CRITIC_UPDATES + 2)
    (_, critic, c_opt), _ = jax.lax.scan(critic_update, (gen, critic, c_opt), keys[:CRITIC_UPDATES])

    def fake(x_t, sigma):
        return x0_from_velocity(x_t, fake_velocity(critic, x_t, sigma * 1000.0), sigma)

    def loss(gen):
        x = mlp(gen, jax.random.normal(keys[-2], (BATCH, 2)))
        return distribution_matching_loss(x, keys[-1], MIXTURE.denoise, fake, SETTINGS)[0]

    updates, g_opt = GEN_OPT.update(jax.grad(loss)(gen), g_opt, gen)
    return (optax.apply_updates(gen, updates), g_opt, critic, c_opt), None


@functools.partial(jax.jit, static_argnums=1)
def train_dmd(key, steps):
    k_gen, k_critic, k_warm, k_train = jax.random.split(key, 4)
    gen, critic = mlp_init(k_gen, (2, 64, 64, 64, 2)), mlp_init(k_critic, (5, 64, 64, 64, 2))
    c_opt = CRITIC_OPT.init(critic)
    # the critic starts fitted to the initial generator (the references start it from the teacher)
    (_, critic, c_opt), _ = jax.lax.scan(critic_update, (gen, critic, c_opt), jax.random.split(k_warm, 300))
    (gen, *_), _ = jax.lax.scan(dmd_update, (gen, GEN_OPT.init(gen), critic, c_opt),
                                jax.random.split(k_train, steps))
    return gen


def test_dmd_reproduces_gaussian_mixture():
    gen = train_dmd(jax.random.key(0), DMD_STEPS)
    x = mlp(gen, jax.random.normal(jax.random.key(1), (EVAL, 2)))
    data, other = MIXTURE.sample(jax.random.key(2), EVAL), MIXTURE.sample(jax.random.key(3), EVAL)
    weights = mode_weights(x, MIXTURE.means)
    np.testing.assert_allclose(weights, MIXTURE.weights, atol=0.05)
    distance, floor = (sliced_wasserstein(a, data, jax.random.key(4)) for a in (x, other))
    assert distance < 3 * floor, (distance, floor)


# -- ODE regression on a Gaussian mixture ------------------------------------------------------------------------

STUDENT_SIGMAS = np.array([1.0, 0.75, 0.5, 0.25], np.float32)


def teacher(noise):
    return teacher_trajectory(lambda _, x, t, __: MIXTURE.velocity(x, t), None, noise, STUDENT_SIGMAS, cond=(),
                              substeps=16)


@functools.partial(jax.jit, static_argnums=2)
def train_ode(key, trajectories, steps):
    student = mlp_init(key, (5, 64, 64, 64, 2))
    opt = optax.adam(2e-3)

    def update(carry, key):
        student, state = carry
        k_batch, k_loss = jax.random.split(key)
        batch = trajectories[jax.random.randint(k_batch, (BATCH,), 0, trajectories.shape[0])]

        def loss(student):
            denoise = lambda x, sigma: mlp(student, with_noise_level(x, sigma * 1000.0))  # noqa: E731
            return ode_regression_loss(denoise, batch, STUDENT_SIGMAS, k_loss)

        updates, state = opt.update(jax.grad(loss)(student), state, student)
        return (optax.apply_updates(student, updates), state), None

    (student, _), _ = jax.lax.scan(update, (student, opt.init(student)), jax.random.split(key, steps))
    return student


def test_ode_regression_lands_on_teacher_endpoints():
    trajectories = teacher(jax.random.normal(jax.random.key(0), (8192, 2)))
    assert trajectories.shape == (8192, 5, 2)
    student = train_ode(jax.random.key(1), trajectories, 2000)
    noise = jax.random.normal(jax.random.key(2), (EVAL, 2))  # unseen noise
    ends = teacher(noise)[:, -1]
    one_step = mlp(student, with_noise_level(noise, jnp.full((EVAL,), 1000.0)))
    error = jnp.linalg.norm(one_step - ends, axis=1)
    assert float(jnp.median(error)) < 0.1 * MIXTURE.std * 4, float(jnp.median(error))
    np.testing.assert_allclose(mode_weights(one_step, MIXTURE.means), mode_weights(ends, MIXTURE.means), atol=0.02)
    np.testing.assert_allclose(mode_weights(ends, MIXTURE.means), MIXTURE.weights, atol=0.03)  # the teacher is right
